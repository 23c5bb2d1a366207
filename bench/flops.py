"""FLOPs of one full training step (forward, backward, optimizer) of every method and of the naive
DFPT-KD reference, per pair, counted by torch.utils.flop_counter over a real step (a multiply-add
is 2 FLOPs; convolutions and matrix products only, as the counter counts), fp32 NCHW: memory
format and autocast do not change the count. Also the book's students alone (CE)."""

from _common import batch, build, groups, pair_settings, parse_args, train_step, write
from torch.utils.flop_counter import FlopCounterMode

from dfpt_core.engine.runtime import resolve_device


def step_flops(step) -> int:
    with FlopCounterMode(display=False) as counter:
        step()
    return int(counter.get_total_flops())


def main():
    args = parse_args(__doc__)
    device = resolve_device("auto")
    settings = pair_settings(args.quick)
    size = settings["batch"]
    results = {}
    for group, rows in groups().items():
        results[group] = {
            row: {"flops": step_flops(train_step(build(e, p, device), *batch(p, size, device)))}
            for row, (e, p) in rows.items()
        }
    write(args.out, settings, results)


if __name__ == "__main__":
    main()
