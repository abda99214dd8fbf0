"""Train the toy canvas classifier and write weights + a manifest.

    python -m benchmarks.toy_canvas.train_classifier [--steps 3000] [--out DIR]

Writes ``classifier.safetensors`` and ``classifier.json`` (sha256, command,
wall time, held-out accuracies) to ``--out`` (default: the ``weights`` folder).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import time

import torch


def main(argv=None) -> int:
    from . import classifier

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-per-pair", type=int, default=50)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=os.path.dirname(classifier.DEFAULT_WEIGHTS))
    args = p.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    t0 = time.time()
    model = classifier.train_classifier(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    train_s = time.time() - t0
    metrics = classifier.evaluate(model, per_pair=args.eval_per_pair)
    print(json.dumps(metrics))

    from safetensors.torch import save_file
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "classifier.safetensors")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    sha = hashlib.sha256(open(path, "rb").read()).hexdigest()
    manifest = {
        "file": "classifier.safetensors",
        "sha256": sha,
        "bytes": os.path.getsize(path),
        "parameters": sum(p.numel() for p in model.parameters()),
        "command": "python -m benchmarks.toy_canvas.train_classifier " + " ".join(argv if argv is not None else sys.argv[1:]),
        "torch": torch.__version__,
        "threads": args.threads,
        "train_wall_s": round(train_s, 1),
        "held_out": dict(metrics, seed_base=classifier.EVAL_SEED_BASE, per_pair=args.eval_per_pair),
    }
    with open(os.path.join(args.out, "classifier.json"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    print(json.dumps(manifest, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
