# Writes qwen-dsvc-micro/: a DeepSpeed-VisualChat-layout Qwen-VL encoder (unprefixed keys, as qwen_clip/pytorch_model.bin)
# at a micro size, saved with torch.save in float16. Values follow VisionTestSupport.ApplyFormulaWeights:
# keys in ordinal order, k = position, i = flat index, s = sin(0.731 i + 1.37 k); LayerNorm weights 1 + 0.1 s, others 0.1 s,
# computed in float64, rounded to float32 then to float16 (the C# side rounds the same way).
# Run with Debian's /usr/bin/python3 (python3-torch) from this folder.
import collections, json, math, os
import numpy as np
import torch

cfg = dict(image_size=28, patch_size=14, width=16, layers=1, heads=2, mlp_size=32, output_dim=16, n_queries=4,
           positional_embedding_size=4, resampler_heads=2, layer_norm_eps=1e-6, use_output_projection=False)
w, m, o, q, p = cfg["width"], cfg["mlp_size"], cfg["output_dim"], cfg["n_queries"], cfg["patch_size"]
shapes = {"conv1.weight": [w, 3, p, p], "positional_embedding": [cfg["positional_embedding_size"], w]}
def ln(name, d): shapes[name + ".weight"] = [d]; shapes[name + ".bias"] = [d]
def linear(name, i, out): shapes[name + ".weight"] = [out, i]; shapes[name + ".bias"] = [out]
ln("ln_pre", w)
for l in range(cfg["layers"]):
    b = f"transformer.resblocks.{l}"
    ln(b + ".ln_1", w); linear(b + ".attn.in_proj", w, 3 * w); linear(b + ".attn.out_proj", w, w)
    ln(b + ".ln_2", w); linear(b + ".mlp.c_fc", w, m); linear(b + ".mlp.c_proj", m, w)
shapes["attn_pool.pos_embed"] = [q, o]; shapes["attn_pool.query"] = [q, o]
if w != o: shapes["attn_pool.kv_proj.weight"] = [o, w]
shapes["attn_pool.attn.in_proj_weight"] = [3 * o, o]; shapes["attn_pool.attn.in_proj_bias"] = [3 * o]
linear("attn_pool.attn.out_proj", o, o); ln("attn_pool.ln_q", o); ln("attn_pool.ln_kv", o); ln("ln_post", o)

def is_norm_weight(key):
    if not key.endswith(".weight"): return False
    module = key[: key.rfind(".")].split(".")[-1]
    return module.startswith("ln_") or "layer_norm" in module or "layrnorm" in module or "layernorm" in module

sd = collections.OrderedDict()
for k, key in enumerate(sorted(shapes)):
    n = int(np.prod(shapes[key]))
    s = np.sin(0.731 * np.arange(n, dtype=np.float64) + 1.37 * k)
    values = (1 + 0.1 * s) if is_norm_weight(key) else 0.1 * s
    sd[key] = torch.from_numpy(values.astype(np.float32)).to(torch.float16).reshape(shapes[key])

os.makedirs("qwen-dsvc-micro", exist_ok=True)
torch.save(sd, "qwen-dsvc-micro/pytorch_model.bin")
with open("qwen-dsvc-micro/config.json", "w") as f:
    json.dump(cfg, f, indent=2)
print(sum(v.numel() for v in sd.values()), "parameters")
