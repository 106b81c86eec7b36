"""Pure-torch LLaMA forward following HF LlamaForCausalLM semantics, on closed-form weights that
LlamaReferenceTests.cs rebuilds identically in C#. Prints the expected logits used as test constants.
Run with Debian's interpreter: /usr/bin/python3 llama_reference.py"""
import math
import torch

torch.set_default_dtype(torch.float32)

def name_seed(name):
    return sum((i + 1) * ord(c) for i, c in enumerate(name)) % 997

def weight(name, shape):
    n = math.prod(shape)
    x = torch.arange(n, dtype=torch.float64) * 0.37 + 0.1 * name_seed(name)
    if name.endswith("norm.weight"):
        w = 1.0 + 0.1 * torch.sin(x)
    else:
        w = 0.08 * torch.sin(x)
    return w.to(torch.float32).reshape(shape)

def rms_norm(x, w, eps):
    dtype = x.dtype
    x = x.to(torch.float32)
    var = x.pow(2).mean(-1, keepdim=True)
    x = x * torch.rsqrt(var + eps)
    return w * x.to(dtype)

def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)

def inv_freq_for(cfg, seq_len):
    dim = cfg["head_dim"]
    base = cfg["rope_theta"]
    scaling = cfg.get("rope_scaling")
    if scaling and scaling["type"] == "dynamic" and seq_len > cfg["max_position_embeddings"]:
        f = scaling["factor"]
        base = base * ((f * seq_len / cfg["max_position_embeddings"]) - (f - 1)) ** (dim / (dim - 2))
    inv = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    if scaling and scaling["type"] == "linear":
        inv = inv / scaling["factor"]
    return inv

def forward(cfg, ids):
    H, nh, nkv, hd = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    B, L = ids.shape
    emb = weight("model.embed_tokens.weight", (cfg["vocab_size"], H))
    x = emb[ids]
    pos = torch.arange(L).unsqueeze(0).expand(B, L)
    inv = inv_freq_for(cfg, L)
    freqs = (inv[None, :, None].float() @ pos[:, None, :].float()).transpose(1, 2)
    e = torch.cat((freqs, freqs), dim=-1)
    cos, sin = e.cos()[:, None], e.sin()[:, None]
    causal = torch.full((L, L), float("-inf")).triu(1)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms_norm(x, weight(p + "input_layernorm.weight", (H,)), cfg["rms_norm_eps"])
        q = (h @ weight(p + "self_attn.q_proj.weight", (nh * hd, H)).T).view(B, L, nh, hd).transpose(1, 2)
        k = (h @ weight(p + "self_attn.k_proj.weight", (nkv * hd, H)).T).view(B, L, nkv, hd).transpose(1, 2)
        v = (h @ weight(p + "self_attn.v_proj.weight", (nkv * hd, H)).T).view(B, L, nkv, hd).transpose(1, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(nh // nkv, dim=1)
        v = v.repeat_interleave(nh // nkv, dim=1)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(hd) + causal
        o = (att.softmax(-1) @ v).transpose(1, 2).reshape(B, L, nh * hd)
        x = x + o @ weight(p + "self_attn.o_proj.weight", (H, nh * hd)).T
        h = rms_norm(x, weight(p + "post_attention_layernorm.weight", (H,)), cfg["rms_norm_eps"])
        I = cfg["intermediate_size"]
        g = h @ weight(p + "mlp.gate_proj.weight", (I, H)).T
        u = h @ weight(p + "mlp.up_proj.weight", (I, H)).T
        x = x + (torch.nn.functional.silu(g) * u) @ weight(p + "mlp.down_proj.weight", (H, I)).T
    x = rms_norm(x, weight("model.norm.weight", (H,)), cfg["rms_norm_eps"])
    head = emb if cfg["tie_word_embeddings"] else weight("lm_head.weight", (cfg["vocab_size"], H))
    return x @ head.T

base = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, rope_theta=10000.0, rms_norm_eps=1e-5, max_position_embeddings=8,
            tie_word_embeddings=False)
ids = torch.tensor([[1, 5, 77, 3, 100, 42, 9, 64, 120, 7, 33, 2]])
cases = {
    "Untied": dict(base),
    "Tied": dict(base, tie_word_embeddings=True),
    "Linear": dict(base, rope_scaling={"type": "linear", "factor": 2.0}),
    "Dynamic": dict(base, rope_scaling={"type": "dynamic", "factor": 2.0}),
}
probe = [(0, 0), (3, 17), (7, 64), (11, 0), (11, 5), (11, 127)]
for name, cfg in cases.items():
    with torch.no_grad():
        logits = forward(cfg, ids)[0]
    vals = ", ".join(f"{logits[p, t].item():.7g}f" for p, t in probe)
    print(f"    static readonly float[] Expected{name} = {{ {vals} }};  // sum {logits.sum().item():.7g}")
