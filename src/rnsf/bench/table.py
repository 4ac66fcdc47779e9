"""The benchmark's result as Markdown tables."""

from __future__ import annotations


def _fmt(value, spec: str = ".3g") -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return lines


def markdown(result: dict) -> str:
    ceil = result["ceiling_tflops"]
    lines = [
        f"device {result['device']} ({result['device_name']}), torch {result['torch']}, "
        f"{result['date']}{' (smoke: reduced widths, not a timing)' if result['smoke'] else ''}",
        "",
        "matmul ceiling, TFLOP/s: " + ", ".join(f"{k} {_fmt(v, '.1f')}" for k, v in ceil.items()),
        "",
    ]
    lines += _table(
        ["model", "TFLOP per image (forward)"],
        [[k, v / 1e12] for k, v in result["flops_per_image"].items()],
    )
    lines.append("")
    lines += _table(
        [
            "model",
            "precision",
            "batch",
            "compile",
            "s/forward",
            "TFLOP/s",
            "% ceiling",
            "% bf16 ceiling",
            "peak GiB",
            "compile s",
        ],
        [
            [
                r["model"],
                r["precision"],
                r["batch"],
                r["compile"] or "off",
                r["seconds"],
                r.get("tflops"),
                r.get("pct_ceiling"),
                r.get("pct_bf16_ceiling"),
                r.get("peak_memory_gib"),
                r.get("compile_seconds") if r.get("skipped") is None else r["skipped"],
            ]
            for r in result["forward"]
        ],
    )
    if result["methods"]:
        lines.append("")
        lines += _table(
            [
                "method",
                "model",
                "precision",
                "compile",
                "batch",
                "steps",
                "NFE",
                "s/image",
                "overhead",
                "s/image at default NFE",
                "images/s at default NFE",
                "peak GiB per image",
            ],
            [
                [
                    r["method"],
                    r["model"],
                    r["precision"],
                    r["compile"] or "off",
                    r["batch"],
                    r["steps"],
                    r["nfe"],
                    r["seconds_per_image"],
                    r["overhead"],
                    f"{_fmt(r['seconds_per_image_default'])} ({r['default_nfe']})",
                    r["images_per_second_default"],
                    r.get("peak_memory_gib_per_image"),
                ]
                for r in result["methods"]
            ],
        )
    if result["dps"]:
        lines.append("")
        lines += _table(
            [
                "DPS",
                "precision",
                "checkpointing",
                "batch",
                "s/step",
                "forwards per step",
                "s/image at 1000 steps",
                "peak GiB per image",
            ],
            [
                [
                    r["model"],
                    r["precision"],
                    r["checkpointing"],
                    r["batch"],
                    r["step_seconds"],
                    r["forwards_per_step"],
                    r["seconds_per_image_1000"],
                    r["peak_memory_gib_per_image"],
                ]
                for r in result["dps"]
            ],
        )
    if result.get("tiling"):
        lines.append("")
        lines += _table(
            [
                "mask-shift",
                "precision",
                "compile",
                "batch",
                "image",
                "window / stride",
                "windows",
                "steps",
                "s/image",
                "s/MP",
            ],
            [
                [
                    r["model"],
                    r["precision"],
                    r["compile"] or "off",
                    r["batch"],
                    f"{r['height']}x{r['width']}",
                    f"{r['window']} / {r['stride']}",
                    r["windows"],
                    r["steps"],
                    r["seconds_per_image"],
                    r["seconds_per_megapixel"],
                ]
                for r in result["tiling"]
            ],
        )
    warm = result.get("compile_cache")
    if warm:
        lines += [
            "",
            f"compilation of {warm['model']} ({warm['precision']}, batch {warm['batch']}, "
            f"{warm['compile']}): {_fmt(warm['cold_seconds'], '.1f')} s into an empty kernel "
            f"cache, {_fmt(warm['warm_seconds'], '.1f')} s from the cache (a sweep's next job)",
        ]
    return "\n".join(lines)
