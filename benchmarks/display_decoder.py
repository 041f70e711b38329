"""A display decoder against the loop decoder on the same codes, so at the same rate
(docs/TRAINING.md, "Decoder alone"):

    python benchmarks/display_decoder.py LOOP.safetensors DISPLAY.safetensors ../shared/data/kodak \
        runs/bench-loop/summary.json [LIMIT]

LOOP's model encodes the first LIMIT images (8) of the folder to its deepest depth (16); both models decode
every depth of those codes; prints MS-SSIM per image and depth, the mean per depth, and the
BD-rate (MS-SSIM) of the display decoder against the loop decoder, with the rates of LOOP's
`rgbatch bench --limit LIMIT` run on the same folder (its adaptive coder's bpp per depth).
"""
import json, sys
import numpy as np, torch
from rgbatch.bench import bd_rate, msssim_db
from rgbatch.codec import Codec
from rgbatch.codes import signs
from rgbatch.imageio import read_image
from rgbatch.metrics import msssim_many
from rgbatch.tiling import paste, to_uint8
from rgbatch.train import list_images

if len(sys.argv) < 5 or sys.argv[1] in ("-h", "--help"):  # "--help" was read as a weight file (until session 62)
    print(__doc__)
    sys.exit(0 if sys.argv[1:2] in (["-h"], ["--help"]) else 2)
torch.set_num_threads(1)
loop, disp = Codec.load(sys.argv[1]), Codec.load(sys.argv[2])
paths = list_images(sys.argv[3])[: int(sys.argv[5]) if len(sys.argv) > 5 else 8]
summary = json.load(open(sys.argv[4]))
curve = summary["codecs"]["rgbatch-adaptive"]["curve"]
bpp = [p["bpp"] for p in curve]
depth = loop.max_iterations
scores = {"loop": [], "display": []}
for path in paths:
    image, _ = read_image(path)
    codes = loop.encode_codes([image], depth)[0]
    for name, codec in (("loop", loop), ("display", disp)):
        recs = np.zeros((depth,) + image.shape, np.uint8)
        with torch.inference_mode():
            for tile, bits in zip(codes.grid, codes.tiles):
                x = torch.from_numpy(signs(bits))[:, None]
                paste(recs, to_uint8(codec.model.reconstructions(x).clamp(-0.5, 0.5))[:, 0], tile)
        scores[name].append(msssim_many(image, recs))
    print(path.name, " ".join(f"{a:.4f}/{b:.4f}" for a, b in zip(scores["loop"][-1], scores["display"][-1])), flush=True)
loop_q, disp_q = np.mean(scores["loop"], 0), np.mean(scores["display"], 0)
print("depth MS-SSIM loop / display:", " ".join(f"{k + 1}:{a:.4f}/{b:.4f}" for k, (a, b) in enumerate(zip(loop_q, disp_q))))
print("bench MS-SSIM of the loop model:", " ".join(f"{p['msssim']:.4f}" for p in curve))
print(f"BD-rate of the display decoder against the loop decoder (same codes): "
      f"{bd_rate(bpp, msssim_db(loop_q), bpp, msssim_db(disp_q)):+.2f} %")
