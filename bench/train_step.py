"""Training-step time (fp32) of every method and of the naive DFPT-KD reference, per pair: all
of a pair's distillers built in this one process and timed round-robin, median after warm-up."""

import statistics

from _common import (
    ENTRANTS,
    PAIRS,
    batch,
    build,
    interleaved_seconds,
    pair_settings,
    parse_args,
    train_step,
    write,
)

from dfpt_core.engine.runtime import resolve_device


def main():
    args = parse_args(__doc__)
    device = resolve_device("auto")
    settings = {**pair_settings(args.quick), "warmup": 1 if args.quick else 2}
    settings["rounds"] = 2 if args.quick else 10
    results = {}
    for pair in PAIRS:
        images, labels = batch(pair, settings["batch"], device)
        steps = {e: train_step(build(e, pair, device), images, labels) for e in ENTRANTS}
        seconds = interleaved_seconds(steps, settings["rounds"], settings["warmup"], device)
        results[pair.name] = {
            e: {
                "step_ms": round(1e3 * statistics.median(s), 3),
                "step_ms_all": [round(1e3 * t, 3) for t in s],
            }
            for e, s in seconds.items()
        }
    write(args.out, settings, results)


if __name__ == "__main__":
    main()
