# Produces ../pil_reference.json: for every image under /work/shared/data/dsvc-eval, PIL's size after
# exif_transpose plus statistics of HF CLIPImageProcessor's output (PIL bicubic resize, center crop,
# float64 rescale -> float32 normalise) at 224 (CLIP) and 448 (Qwen-VL). Also dumps raw arrays to /tmp/imgref
# (not committed) used for the one-off full-array comparison reported in the README.
# Run with Debian's interpreter: /usr/bin/python3 make_pil_reference.py (python3-pil 9.4, python3-numpy).
import os, json, hashlib, numpy as np
from PIL import Image, ImageOps
ROOT = '/work/shared/data/dsvc-eval'
MEAN = np.array([0.48145466,0.4578275,0.40821073], dtype=np.float32)
STD = np.array([0.26862954,0.26130258,0.27577711], dtype=np.float32)
def to_rgb(im):
    if im.mode == 'RGB': return im
    rgba = im.convert('RGBA')
    bg = Image.new('RGBA', rgba.size, (255,255,255))
    return Image.alpha_composite(bg, rgba).convert('RGB')
def resize_size(h, w, s):
    short, long = (w, h) if w <= h else (h, w)
    nl = int(s * long / short)
    return (nl, s) if w <= h else (s, nl)
def hf(im, s):
    w, h = im.size
    oh, ow = resize_size(h, w, s)
    r = im.resize((ow, oh), Image.BICUBIC)
    a = np.array(r)
    top = (oh - s)//2; left = (ow - s)//2
    c = a[top:top+s, left:left+s]
    x = (c.astype(np.float64) * (1/255)).astype(np.float32)
    x = (x - MEAN) / STD
    return r, c, x
out = {}
files = sorted(os.path.relpath(os.path.join(d,f), ROOT) for d,_,fs in os.walk(ROOT) for f in fs if not f.endswith('.json'))
for rel in files:
    im0 = Image.open(os.path.join(ROOT, rel))
    exif = im0.getexif()
    orient = exif.get(0x0112, 1)
    mode0 = im0.mode; fmt = im0.format
    im = ImageOps.exif_transpose(im0)
    rgb = to_rgb(im)
    key = rel.replace('/', '__')
    np.array(rgb).tofile(f'/tmp/imgref/{key}.decoded.rgb')
    entry = dict(format=fmt, mode=mode0, orientation=orient, width=rgb.size[0], height=rgb.size[1],
                 progressive=bool(im0.info.get('progressive', 0)))
    for s in (224, 448):
        r, c, x = hf(rgb, s)
        np.array(r).tofile(f'/tmp/imgref/{key}.resized{s}.rgb')
        x.tofile(f'/tmp/imgref/{key}.norm{s}.f32')
        entry[f'clip{s}'] = dict(
            resized_width=r.size[0], resized_height=r.size[1],
            crop_level_sum=int(c.astype(np.int64).sum()),
            crop_sha256=hashlib.sha256(np.ascontiguousarray(c).tobytes()).hexdigest(),
            channel_mean=[float(x[..., k].astype(np.float64).mean()) for k in range(3)],
            pixels={f'{py},{px}': [int(v) for v in c[py, px]] for (py, px) in [(0,0),(s//2,s//2),(s-1,s-1),(17,s-5)]})
    out[rel] = entry
    print(rel, fmt, mode0, orient, rgb.size, entry['progressive'])
json.dump(out, open('/tmp/imgref/pil_reference.json','w'), indent=1)
a = np.array(Image.open(os.path.join(ROOT,'eval/eval_data/images/friends/wrong-count1.jpg')))
print('alpha min/max', a[...,3].min(), a[...,3].max(), (a[...,3]<255).mean())
