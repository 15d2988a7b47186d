"""`python -m conversion VOICE.onnx --target rk3588 --out models/rknn/NAME/` (run it in .venv-convert:
`script/setup-convert` installs rknn-toolkit2 there)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .convert import DECODER_WINDOWS, FLOW_WINDOWS, SUPPORTED_TARGETS, ConversionError, ConversionOptions, convert_voice


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m conversion", description="Compile a Piper voice's flow and HiFi-GAN decoder for a Rockchip NPU."
    )
    parser.add_argument("voice", type=Path, help="the voice's .onnx file (its .onnx.json beside it)")
    parser.add_argument("--config", type=Path, help="the voice JSON, if not VOICE.onnx.json")
    parser.add_argument("--target", default="rk3588", choices=SUPPORTED_TARGETS)
    parser.add_argument("--out", type=Path, help="bundle folder (default models/rknn/NAME)")
    parser.add_argument("--flow-window", type=int,
                        help=f"frames incl. context (default: largest clean of {FLOW_WINDOWS})")
    parser.add_argument("--decoder-window", type=int,
                        help=f"frames incl. context (default: largest clean of {DECODER_WINDOWS})")
    parser.add_argument("--flow", choices=["auto", "npu", "cpu"], default="auto",
                        help="where the flow runs: auto (NPU if the chain passes the gate, else CPU), npu, cpu")
    parser.add_argument("--min-snr", type=float, default=45.0, help="verification gate in dB (default 45)")
    args = parser.parse_args(argv)
    name = args.voice.name.removesuffix(".onnx")
    out = args.out or Path("models/rknn") / name
    options = ConversionOptions(target=args.target, flow_window=args.flow_window,
                                decoder_window=args.decoder_window, flow_placement=args.flow,
                                min_snr_db=args.min_snr)
    started = time.monotonic()

    def progress(line: str) -> None:
        print(f"{time.monotonic() - started:6.1f}s {line}", file=sys.stderr, flush=True)

    try:
        manifest = convert_voice(args.voice, out, options, progress, args.config)
    except ConversionError as e:
        print(f"conversion failed: {e}", file=sys.stderr)
        return 1
    flow = f"flow {manifest.flow.window} frames" if manifest.flow else "flow on the CPU"
    print(f"bundle for {manifest.voice} ({manifest.target}) in {out}: {flow}, decoder {manifest.decoder.window} "
          f"frames, {manifest.pipeline_snr_db:.1f} dB and MCD {manifest.pipeline_mcd_db:.3f} dB against onnxruntime "
          f"(worst of {len(manifest.verification)} sentences)")
    return 0
