# Produces ../format_fixtures.json: tiny images in each supported format/mode (RGBA, LA, L, P, 16-bit RGB and
# gray PNG, BMP, 2-frame GIF), base64-encoded, with the RGB bytes PIL decodes (alpha composited on white).
# Run with Debian's interpreter: mkdir -p /tmp/imgref && /usr/bin/python3 make_format_fixtures.py
import io, json, zlib, struct, base64, numpy as np
from PIL import Image
rng = np.random.default_rng(7)
W, H = 5, 3
def png_chunk(t, d): return struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d) & 0xffffffff)
def raw_png(arr, color_type, bitdepth):
    h, w = arr.shape[:2]
    dt = '>u2' if bitdepth == 16 else 'u1'
    rows = b''.join(b'\x00' + arr[y].astype(dt).tobytes() for y in range(h))
    return (b'\x89PNG\r\n\x1a\n' + png_chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, bitdepth, color_type, 0, 0, 0))
            + png_chunk(b'IDAT', zlib.compress(rows)) + png_chunk(b'IEND', b''))
def composite(im):
    rgba = im.convert('RGBA')
    return Image.alpha_composite(Image.new('RGBA', rgba.size, (255,255,255)), rgba).convert('RGB')
fx = {}
def add(name, data, expected_rgb, note, expected_drop=None):
    e = dict(base64=base64.b64encode(data).decode(), width=expected_rgb.shape[1], height=expected_rgb.shape[0],
             rgb_hex=expected_rgb.astype(np.uint8).tobytes().hex(), note=note)
    if expected_drop is not None: e['rgb_drop_alpha_hex'] = expected_drop.astype(np.uint8).tobytes().hex()
    fx[name] = e
rgba = rng.integers(0, 256, (H, W, 4), dtype=np.uint8); rgba[0, 0, 3] = 0; rgba[0, 1, 3] = 255
b = io.BytesIO(); Image.fromarray(rgba, 'RGBA').save(b, 'PNG')
add('rgba_png', b.getvalue(), np.array(composite(Image.open(io.BytesIO(b.getvalue())))), 'RGBA PNG, PIL alpha_composite on white', rgba[..., :3])
la = rng.integers(0, 256, (H, W, 2), dtype=np.uint8)
b = io.BytesIO(); Image.fromarray(la, 'LA').save(b, 'PNG')
add('gray_alpha_png', b.getvalue(), np.array(composite(Image.open(io.BytesIO(b.getvalue())))), 'LA PNG composited on white')
g = rng.integers(0, 256, (H, W), dtype=np.uint8)
b = io.BytesIO(); Image.fromarray(g, 'L').save(b, 'PNG')
add('gray_png', b.getvalue(), np.array(Image.open(io.BytesIO(b.getvalue())).convert('RGB')), 'L PNG')
pal = Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8), 'RGB').quantize(6)
b = io.BytesIO(); pal.save(b, 'PNG')
add('palette_png', b.getvalue(), np.array(Image.open(io.BytesIO(b.getvalue())).convert('RGB')), 'P PNG (6 colours)')
rgb16 = rng.integers(0, 65536, (H, W, 3), dtype=np.uint16)
d = raw_png(rgb16, 2, 16)
add('rgb16_png', d, np.array(Image.open(io.BytesIO(d)).convert('RGB')), '16-bit RGB PNG; PIL keeps the high byte')
g16 = rng.integers(0, 65536, (H, W), dtype=np.uint16)
d = raw_png(g16, 0, 16)
add('gray16_png', d, np.repeat((g16 >> 8).astype(np.uint8)[..., None], 3, axis=2), '16-bit gray PNG; expected = high byte (PIL would clip I;16 to 255 instead)')
b = io.BytesIO(); Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8), 'RGB').save(b, 'BMP')
add('rgb_bmp', b.getvalue(), np.array(Image.open(io.BytesIO(b.getvalue())).convert('RGB')), '24-bit BMP')
f1 = Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8), 'RGB').quantize(8)
f2 = Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8), 'RGB').quantize(8)
b = io.BytesIO(); f1.save(b, 'GIF', save_all=True, append_images=[f2])
add('two_frame_gif', b.getvalue(), np.array(Image.open(io.BytesIO(b.getvalue())).convert('RGB')), 'animated GIF, first frame')
json.dump(fx, open('/tmp/imgref/format_fixtures.json', 'w'), indent=1)
print({k: (v['width'], v['height'], len(v['base64'])) for k, v in fx.items()})
