"""Where do the decoder's queries lose their identity? Norms of each decoder sub-layer's output
and their spread across the queries of a prompt, on one evaluation batch (issue 18).

    python scripts/decoder_norms.py --ckpt <run>/checkpoints/epoch_009.ckpt [--split val]

Per layer and sub-layer (self-attention, text cross-attention, image cross-attention, the FFN's
last linear, the LayerNorms after the image cross-attention and the FFN): the mean L2 norm of
the output vectors and the mean over channels of their standard deviation across the 24 o2o
queries (0 = every query carries the same vector). A residual branch whose output is much
larger than the query it is added to, and nearly the same for every query, erases the query's
identity in the LayerNorm that follows.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from presence_auc import model_and_split, model_source_parser  # noqa: E402

from region_sam3.data.sam3_adapter import to_sam3_batch  # noqa: E402

SUBLAYERS = ("self_attn", "ca_text", "cross_attn", "norm1", "linear2", "norm3")


@torch.no_grad()
def main() -> None:
    args = model_source_parser(__doc__.splitlines()[0], split="val").parse_args()
    module, datamodule = model_and_split(args)
    batch = next(iter(datamodule.test_dataloader()))
    num_queries = module.net.transformer.decoder.num_queries
    rows: dict[str, tuple[float, float]] = {}

    def record(name: str):
        def hook(_module, _inputs, output) -> None:
            x = (output[0] if isinstance(output, tuple) else output).float()
            # sam3's decoder is sequence-first ([queries (+ presence token), prompts, d]); the
            # o2o queries are the first `num_queries` rows (eval runs no o2m copies)
            queries = x[-num_queries:] if x.shape[0] != num_queries else x
            rows[name] = (queries.norm(dim=-1).mean().item(), queries.std(dim=0).mean().item())
        return hook

    for i, layer in enumerate(module.net.transformer.decoder.layers):
        for sub in SUBLAYERS:
            if hasattr(layer, sub):
                getattr(layer, sub).register_forward_hook(record(f"layer {i} {sub}"))
    module.net(to_sam3_batch(batch, module.device))
    print(f"{args.ckpt or args.base}, one {args.split} batch ({len(batch.prompts)} prompts)")
    print(f"{'sub-layer':22s} {'norm':>8s} {'std across queries':>20s}")
    for name, (norm, spread) in rows.items():
        print(f"{name:22s} {norm:8.2f} {spread:20.3f}")


if __name__ == "__main__":
    main()
