"""Training-step time of every method and of the naive DFPT-KD reference per pair, and of the
book's students alone (CE), in each CPU-relevant setting (fp32 NCHW, fp32 channels_last,
channels_last + bf16 autocast where the device has native bf16): per group and setting, all its
steps built in this one process and timed round-robin, median after warm-up."""

import statistics

from _common import (
    FP32,
    SETTINGS,
    batch,
    build,
    groups,
    interleaved_seconds,
    pair_settings,
    parse_args,
    skip_reason,
    train_step,
    trainer_malloc,
    write,
)

from dfpt_core.engine.runtime import resolve_device


def main():
    args = parse_args(__doc__)
    device = resolve_device("auto")
    settings = {**pair_settings(args.quick), "warmup": 0 if args.quick else 2}
    settings["cpu_malloc"] = trainer_malloc(device)
    settings["rounds"] = 1 if args.quick else 10
    settings["step_settings"] = {
        s.name: {"channels_last": s.channels_last, "amp": s.amp, "precision": s.precision}
        for s in SETTINGS
    }
    size = settings["batch"]
    results = {}
    for group, rows in groups().items():
        results[group] = {row: {"by_setting": {}} for row in rows}
        for setting in SETTINGS:
            if reason := skip_reason(setting, device):
                for row in rows:
                    results[group][row]["by_setting"][setting.name] = {"skipped": reason}
                continue
            steps = {
                row: train_step(build(e, p, device), *batch(p, size, device), setting)
                for row, (e, p) in rows.items()
            }
            seconds = interleaved_seconds(steps, settings["rounds"], settings["warmup"], device)
            for row, s in seconds.items():
                results[group][row]["by_setting"][setting.name] = {
                    "step_ms": round(1e3 * statistics.median(s), 3),
                    "step_ms_all": [round(1e3 * t, 3) for t in s],
                }
            del steps
        for row in results[group].values():  # the reference setting, as schema 1 had it
            row.update(row["by_setting"][FP32.name])
    write(args.out, settings, results)


if __name__ == "__main__":
    main()
