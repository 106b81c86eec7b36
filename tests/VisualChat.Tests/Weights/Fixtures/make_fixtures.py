import torch, collections, zipfile, io, pickle, os
torch.manual_seed(0)
sd = collections.OrderedDict()
sd["f32"] = torch.tensor([[1.5, -2.25, 3.0], [0.125, 1e-3, -7.0]], dtype=torch.float32)
sd["f16"] = torch.tensor([0.5, -1.0, 65504.0, 1e-4], dtype=torch.float16)
sd["bf16"] = torch.tensor([[1.0, -3.5], [2.0 ** 20, 0.0078125]], dtype=torch.bfloat16)
sd["i64"] = torch.tensor([1, -2, 3_000_000_000_000], dtype=torch.int64)
base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
sd["transposed"] = base.t()            # 4x3, stride (1,4), non-contiguous
sd["shared_a"] = base                   # shares storage with transposed
big = torch.arange(10, dtype=torch.float32)
sd["slice_b"] = big[2:8:2]              # offset 2, stride 2 -> [2,4,6]
sd["slice_c"] = big[5:]                 # same storage, offset 5
torch.save(sd, "tensors.bin")
# Nested like a DeepSpeed/trainer checkpoint
# (DeepSpeed model-state files keep param_shapes of torch.Size, a device and plain values beside "module")
w = torch.tensor([1.0, 2.0])
torch.save({"module": collections.OrderedDict([("w", w)]), "buffer_names": [], "optimizer": None,
            "param_shapes": [collections.OrderedDict([("w", w.shape)])], "device": torch.device("cpu"),
            "ds_version": "0.10.0", "global_steps": 3}, "nested.bin")
# model.state_dict() style (OrderedDict with _metadata attribute -> BUILD)
m = torch.nn.Linear(3, 2)
with torch.no_grad():
    m.weight.copy_(torch.tensor([[1., 2., 3.], [4., 5., 6.]])); m.bias.copy_(torch.tensor([0.5, -0.5]))
torch.save(m.state_dict(), "linear.bin")
# a Parameter directly (uses _rebuild_parameter)
torch.save({"p": torch.nn.Parameter(torch.tensor([3.0, 4.0]))}, "parameter.bin")
# malicious: same zip layout, data.pkl REDUCEs os.system
class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))  # replaced below by a hand-written "os system" pickle
buf = io.BytesIO()
with zipfile.ZipFile("malicious.bin", "w", compression=zipfile.ZIP_STORED) as z:
    z.writestr("malicious/data.pkl", pickle.dumps(Evil(), protocol=2))
    z.writestr("malicious/version", "3\n")
# The malicious fixture committed is the hand-written protocol-2 pickle below (GLOBAL 'os system'), as pickle.dumps
# writes 'posix system' on Linux:
pkl = b'\x80\x02cos\nsystem\nq\x00X\x0a\x00\x00\x00echo pwnedq\x01\x85q\x02Rq\x03.'
with zipfile.ZipFile("malicious.bin", "w", compression=zipfile.ZIP_STORED) as z:
    z.writestr("malicious/data.pkl", pkl)
    z.writestr("malicious/version", "3\n")
