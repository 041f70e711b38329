"""The `rgbatch` command line: thin typer commands over the library functions.

Each command parses its options and calls one library function. User errors (bad paths,
bad options, unusable weights) print one line and exit 2; never a traceback.
Exit codes: 0 all good, 1 some images failed (the rest done), 2 usage or set-up error.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Compress whole image archives with the Residual-GRU learned codec.")
err = Console(stderr=True)
out = Console()

USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, PermissionError, RuntimeError)


@contextlib.contextmanager
def user_errors():
    """Turn the library's worded errors into one red line and exit code 2."""
    try:
        yield
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        err.print("[red]interrupted[/red]")
        raise typer.Exit(130)
    except USER_ERRORS as e:
        err.print(f"[red]error:[/red] {e}", markup=True, highlight=False)
        raise typer.Exit(2)


@app.callback()
def _root():
    """Compress whole image archives with the Residual-GRU learned codec."""


@app.command()
def info(weights: Optional[Path] = typer.Option(None, help="Weight file (default: the shipped model).")):
    """Show the model: id, width, iterations, parameters, FLOPs per pixel, training notes."""
    from .model import flops_per_pixel, parameter_count
    from .weights import load_weights

    with user_errors():
        model, mid, extra, meta = load_weights(weights)
    cfg = model.cfg
    facts = {"model_id": mid, **json.loads(cfg.to_json()), "parameters": parameter_count(model),
             "encode_flops_per_pixel_per_iteration": flops_per_pixel(cfg),
             "decode_flops_per_pixel_per_iteration": flops_per_pixel(cfg, part="decode"),
             "entropy_model_tensors": sorted(extra), "training": meta}
    out.print_json(json.dumps(facts))


@app.command()
def train(
    data_dir: Path = typer.Argument(..., help="Folder of training images (searched recursively)."),
    out_path: Path = typer.Option(..., "--out", help="Checkpoint file to write (and resume from)."),
    resume: bool = typer.Option(False, help="Continue the run in --out exactly where it stopped."),
    width: float = typer.Option(0.5, help="Channel multiplier; 1.0 is the paper's model."),
    reconstruction: str = typer.Option("scaled-additive", help="one-shot | additive | scaled-additive"),
    iterations: int = typer.Option(8, help="Iterations unrolled per training step."),
    max_iterations: int = typer.Option(16, help="Iterations the model supports at inference."),
    batch_size: int = typer.Option(32),
    patch: int = typer.Option(32, help="Training patch size in pixels (multiple of 32)."),
    steps: int = typer.Option(100_000, help="Length of the learning-rate schedule."),
    lr: float = typer.Option(5e-4),
    hard_fraction: float = typer.Option(0.0, help="Share of each batch drawn as the busiest of 4x candidates."),
    loss_weighting: str = typer.Option("uniform", help="uniform | gain"),
    bf16: bool = typer.Option(True, help="bfloat16 autocast on the CPU."),
    threads: int = typer.Option(0, help="Torch threads (0: all cores)."),
    seed: int = typer.Option(0),
    checkpoint_every: int = typer.Option(500),
    eval_dir: Optional[Path] = typer.Option(None, "--eval", help="Folder to evaluate on (e.g. Kodak)."),
    eval_every: int = typer.Option(2000),
    eval_images: int = typer.Option(6),
):
    """Train a model on random patches of DATA_DIR (resumable; see docs/TRAINING.md)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from .train import TrainConfig, train as run_training

    with user_errors():
        cfg = TrainConfig(
            data_dir=str(data_dir), out=str(out_path), steps=steps, batch_size=batch_size, patch=patch,
            iterations=iterations, lr=lr, hard_fraction=hard_fraction, loss_weighting=loss_weighting, bf16=bf16,
            threads=threads, seed=seed, checkpoint_every=checkpoint_every,
            eval_dir=str(eval_dir) if eval_dir else None, eval_every=eval_every, eval_images=eval_images,
            codec=dict(width=width, reconstruction=reconstruction, max_iterations=max_iterations))
        columns = [TextColumn("step {task.completed}/{task.total}"), BarColumn(),
                   TextColumn("loss {task.fields[loss]:.5f}  {task.fields[rate]:.2f} steps/s"), TimeRemainingColumn()]
        with Progress(*columns, console=err, transient=False) as bar:
            task = bar.add_task("train", total=steps, loss=0.0, rate=0.0)
            run_training(cfg, resume=resume, log=bar.console.print,
                         progress=lambda s, loss, rate: bar.update(task, completed=s, loss=loss, rate=rate))


def main():
    app()


if __name__ == "__main__":
    main()
