#!/usr/bin/python3
"""Produces vision_reference.json for VisionReferenceTests (run with Debian's /usr/bin/python3 + python3-torch + numpy).

Independent pure-torch re-statements of HF CLIPVisionModel and of Qwen-VL's visual encoder (DeepSpeed-VisualChat's
extracted form), over weights given by a closed formula the C# tests reproduce:
  keys sorted by ordinal string order, k = position in that list, i = flat element index,
  s = sin(0.731 * i + 1.37 * k) (float64, then float32);
  LayerNorm weights = 1 + 0.1 s, everything else 0.1 s.  Qwen's attn_pool.pos_embed keeps its sin-cos value.
"""
import json, math
import numpy as np
import torch
import torch.nn.functional as F

torch.set_default_dtype(torch.float32)


def is_norm_weight(key):
    module = key.rsplit('.', 1)[0].rsplit('.', 1)[-1]
    return key.endswith('.weight') and (module.startswith('ln_') or 'layer_norm' in module or 'layrnorm' in module or 'layernorm' in module)


def formula_weights(shapes, skip=()):
    out = {}
    for k, key in enumerate(sorted(shapes)):
        if key in skip:
            continue
        n = int(np.prod(shapes[key]))
        s = torch.sin(torch.arange(n, dtype=torch.float64) * 0.731 + 1.37 * k)
        v = 1 + 0.1 * s if is_norm_weight(key) else 0.1 * s
        out[key] = v.to(torch.float32).reshape(shapes[key])
    return out


def pixels(shape, phase):
    n = int(np.prod(shape))
    return torch.sin(torch.arange(n, dtype=torch.float64) * 0.05 + phase).to(torch.float32).reshape(shape)


# ---------------- CLIP ----------------
D, I, L, H, IMG, P = 32, 64, 2, 4, 32, 8
NPOS = (IMG // P) ** 2 + 1
clip_shapes = {
    'vision_model.embeddings.class_embedding': [D],
    'vision_model.embeddings.patch_embedding.weight': [D, 3, P, P],
    'vision_model.embeddings.position_embedding.weight': [NPOS, D],
    'vision_model.pre_layrnorm.weight': [D], 'vision_model.pre_layrnorm.bias': [D],
    'vision_model.post_layernorm.weight': [D], 'vision_model.post_layernorm.bias': [D],
}
for l in range(L):
    p = f'vision_model.encoder.layers.{l}.'
    for proj in ['q_proj', 'k_proj', 'v_proj', 'out_proj']:
        clip_shapes[p + f'self_attn.{proj}.weight'] = [D, D]
        clip_shapes[p + f'self_attn.{proj}.bias'] = [D]
    for ln in ['layer_norm1', 'layer_norm2']:
        clip_shapes[p + ln + '.weight'] = [D]
        clip_shapes[p + ln + '.bias'] = [D]
    clip_shapes[p + 'mlp.fc1.weight'] = [I, D]; clip_shapes[p + 'mlp.fc1.bias'] = [I]
    clip_shapes[p + 'mlp.fc2.weight'] = [D, I]; clip_shapes[p + 'mlp.fc2.bias'] = [D]


def clip_forward(w, x, act):
    patches = F.conv2d(x, w['vision_model.embeddings.patch_embedding.weight'], stride=P).flatten(2).transpose(1, 2)
    cls = w['vision_model.embeddings.class_embedding'].expand(x.shape[0], 1, D)
    h = torch.cat([cls, patches], 1) + w['vision_model.embeddings.position_embedding.weight']
    h = F.layer_norm(h, [D], w['vision_model.pre_layrnorm.weight'], w['vision_model.pre_layrnorm.bias'], 1e-5)
    states = [h]
    for l in range(L):
        p = f'vision_model.encoder.layers.{l}.'
        r = h
        t = F.layer_norm(h, [D], w[p + 'layer_norm1.weight'], w[p + 'layer_norm1.bias'], 1e-5)
        B, T, _ = t.shape
        def heads(z):
            return z.view(B, T, H, D // H).transpose(1, 2)
        q = heads(F.linear(t, w[p + 'self_attn.q_proj.weight'], w[p + 'self_attn.q_proj.bias'])) * (D // H) ** -0.5
        k = heads(F.linear(t, w[p + 'self_attn.k_proj.weight'], w[p + 'self_attn.k_proj.bias']))
        v = heads(F.linear(t, w[p + 'self_attn.v_proj.weight'], w[p + 'self_attn.v_proj.bias']))
        a = torch.softmax(q @ k.transpose(-1, -2), -1) @ v
        a = F.linear(a.transpose(1, 2).reshape(B, T, D), w[p + 'self_attn.out_proj.weight'], w[p + 'self_attn.out_proj.bias'])
        h = r + a
        r = h
        t = F.layer_norm(h, [D], w[p + 'layer_norm2.weight'], w[p + 'layer_norm2.bias'], 1e-5)
        t = F.linear(t, w[p + 'mlp.fc1.weight'], w[p + 'mlp.fc1.bias'])
        t = t * torch.sigmoid(1.702 * t) if act == 'quick_gelu' else F.gelu(t)
        h = r + F.linear(t, w[p + 'mlp.fc2.weight'], w[p + 'mlp.fc2.bias'])
        states.append(h)
    pooled = F.layer_norm(h[:, 0], [D], w['vision_model.post_layernorm.weight'], w['vision_model.post_layernorm.bias'], 1e-5)
    return h, pooled, states


def summary(t, picks):
    flat = t.reshape(-1).double()
    return {'shape': list(t.shape), 'sum': flat.sum().item(), 'abs_sum': flat.abs().sum().item(),
            'picks': [[i, flat[i].item()] for i in picks]}


ref = {}
cw = formula_weights(clip_shapes)
cx = pixels([2, 3, IMG, IMG], 0.0)
with torch.no_grad():
    last, pooled, states = clip_forward(cw, cx, 'quick_gelu')
    last_g, _, _ = clip_forward(cw, cx, 'gelu')
ref['clip_keys'] = sorted(clip_shapes)
ref['clip_last_hidden_state'] = summary(last, [0, 1, 31, 33, 500, 543, 544, 1087])
ref['clip_pooled'] = summary(pooled, [0, 5, 31, 32, 63])
ref['clip_penultimate'] = summary(states[-2], [0, 17, 100, 1087])
ref['clip_last_hidden_state_gelu'] = summary(last_g, [0, 1, 31, 33, 500, 543, 544, 1087])

# ---------------- Qwen ----------------
QIMG, QP, W, QL, QH, MLP, OUT, NQ, NPE, RH, EPS = 56, 14, 32, 2, 4, 64, 48, 4, 4, 2, 1e-6
G = QIMG // QP


def sincos_2d(dim, grid):
    # MAE convention: np.meshgrid(w, h) so the first half encodes the column index.
    gw, gh = np.meshgrid(np.arange(grid, dtype=np.float32), np.arange(grid, dtype=np.float32))
    def one(d, pos):
        omega = np.arange(d // 2, dtype=np.float32) / (d / 2.0)
        omega = 1.0 / 10000 ** omega
        out = np.outer(pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], 1)
    return np.concatenate([one(dim // 2, gw), one(dim // 2, gh)], 1).astype(np.float32)


def abs_pos(table, tokens):
    s, t = int(math.sqrt(table.shape[0])), int(math.sqrt(tokens))
    if s == t:
        return table
    return F.interpolate(table.float().reshape(1, s, s, -1).permute(0, 3, 1, 2), size=(t, t), mode='bicubic',
                         align_corners=False).permute(0, 2, 3, 1).flatten(0, 2)


qwen_shapes = {
    'conv1.weight': [W, 3, QP, QP], 'positional_embedding': [NPE, W],
    'ln_pre.weight': [W], 'ln_pre.bias': [W], 'ln_post.weight': [OUT], 'ln_post.bias': [OUT],
    'attn_pool.pos_embed': [NQ, OUT], 'attn_pool.query': [NQ, OUT], 'attn_pool.kv_proj.weight': [OUT, W],
    'attn_pool.attn.in_proj_weight': [3 * OUT, OUT], 'attn_pool.attn.in_proj_bias': [3 * OUT],
    'attn_pool.attn.out_proj.weight': [OUT, OUT], 'attn_pool.attn.out_proj.bias': [OUT],
    'attn_pool.ln_q.weight': [OUT], 'attn_pool.ln_q.bias': [OUT], 'attn_pool.ln_kv.weight': [OUT], 'attn_pool.ln_kv.bias': [OUT],
}
for l in range(QL):
    p = f'transformer.resblocks.{l}.'
    for ln in ['ln_1', 'ln_2']:
        qwen_shapes[p + ln + '.weight'] = [W]; qwen_shapes[p + ln + '.bias'] = [W]
    qwen_shapes[p + 'attn.in_proj.weight'] = [3 * W, W]; qwen_shapes[p + 'attn.in_proj.bias'] = [3 * W]
    qwen_shapes[p + 'attn.out_proj.weight'] = [W, W]; qwen_shapes[p + 'attn.out_proj.bias'] = [W]
    qwen_shapes[p + 'mlp.c_fc.weight'] = [MLP, W]; qwen_shapes[p + 'mlp.c_fc.bias'] = [MLP]
    qwen_shapes[p + 'mlp.c_proj.weight'] = [W, MLP]; qwen_shapes[p + 'mlp.c_proj.bias'] = [W]

qw = formula_weights(qwen_shapes, skip={'attn_pool.pos_embed'})
qw['attn_pool.pos_embed'] = torch.from_numpy(sincos_2d(OUT, int(math.sqrt(NQ))))


def qwen_forward(w, x):
    h = F.conv2d(x, w['conv1.weight'], stride=QP)
    h = h.reshape(h.shape[0], h.shape[1], -1).permute(0, 2, 1)
    h = h + abs_pos(w['positional_embedding'], h.shape[1])
    h = F.layer_norm(h, [W], w['ln_pre.weight'], w['ln_pre.bias'], EPS)
    B, T, _ = h.shape
    hd = W // QH
    for l in range(QL):
        p = f'transformer.resblocks.{l}.'
        t = F.layer_norm(h, [W], w[p + 'ln_1.weight'], w[p + 'ln_1.bias'], EPS)
        mixed = F.linear(t, w[p + 'attn.in_proj.weight'], w[p + 'attn.in_proj.bias']).view(B, T, QH, 3 * hd)
        q, k, v = [z.transpose(1, 2) for z in mixed.split(hd, -1)]  # per-head [q|k|v] layout
        a = torch.softmax((q / math.sqrt(hd)) @ k.transpose(-1, -2), -1) @ v
        h = h + F.linear(a.transpose(1, 2).reshape(B, T, W), w[p + 'attn.out_proj.weight'], w[p + 'attn.out_proj.bias'])
        t = F.layer_norm(h, [W], w[p + 'ln_2.weight'], w[p + 'ln_2.bias'], EPS)
        h = h + F.linear(F.gelu(F.linear(t, w[p + 'mlp.c_fc.weight'], w[p + 'mlp.c_fc.bias'])), w[p + 'mlp.c_proj.weight'], w[p + 'mlp.c_proj.bias'])
    # Resampler through torch's own nn.MultiheadAttention (sequence-first).
    mha = torch.nn.MultiheadAttention(OUT, RH)
    mha.in_proj_weight.data.copy_(w['attn_pool.attn.in_proj_weight']); mha.in_proj_bias.data.copy_(w['attn_pool.attn.in_proj_bias'])
    mha.out_proj.weight.data.copy_(w['attn_pool.attn.out_proj.weight']); mha.out_proj.bias.data.copy_(w['attn_pool.attn.out_proj.bias'])
    pos = w['attn_pool.pos_embed']
    kv = F.layer_norm(F.linear(h, w['attn_pool.kv_proj.weight']), [OUT], w['attn_pool.ln_kv.weight'], w['attn_pool.ln_kv.bias'], EPS).permute(1, 0, 2)
    q = F.layer_norm(w['attn_pool.query'], [OUT], w['attn_pool.ln_q.weight'], w['attn_pool.ln_q.bias'], EPS)
    out = mha(q.unsqueeze(1).repeat(1, B, 1) + pos.unsqueeze(1), kv + abs_pos(pos, T).unsqueeze(1), kv)[0].permute(1, 0, 2)
    return F.layer_norm(out, [OUT], w['ln_post.weight'], w['ln_post.bias'], EPS)


qx = torch.cat([pixels([1, 3, QIMG, QIMG], 0.0), pixels([1, 3, QIMG, QIMG], 0.9)], 0)
with torch.no_grad():
    qout = qwen_forward(qw, qx)
ref['qwen_keys'] = sorted(qwen_shapes)
ref['qwen_output'] = summary(qout, [0, 1, 47, 48, 100, 191, 192, 383])

ref['sincos_8x3'] = sincos_2d(8, 3).reshape(-1).tolist()
ref['sincos_4096x16_picks'] = [[r, c, float(sincos_2d(4096, 16)[r, c])] for r, c in [(0, 0), (17, 5), (17, 1030), (17, 2048 + 5), (255, 1023), (255, 3071), (200, 4095)]]
table = torch.sin(torch.arange(4 * 6, dtype=torch.float64) * 0.3).float().reshape(4, 6)
ref['abs_pos_table_4x6'] = table.reshape(-1).tolist()
ref['abs_pos_to_16'] = abs_pos(table, 16).reshape(-1).tolist()
ref['abs_pos_to_9'] = abs_pos(table, 9).reshape(-1).tolist()

with open(__file__.replace('make_vision_reference.py', 'vision_reference.json'), 'w') as f:
    json.dump(ref, f, indent=1)
print('ok', {k: v['sum'] for k, v in ref.items() if isinstance(v, dict)})
