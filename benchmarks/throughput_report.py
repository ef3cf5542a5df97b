"""benchmarks/throughput.py's figures and report: the ratios against the peer, the goals, the
table and the JSON line's summary."""

import statistics
import time

from benchmarks.timing import loadavg

GOALS = {"fit_ratio": 1.15, "frozen_ratio": 2.5, "pipeline_ratio": 5.0, "inference_ratio": 1.1,
         "peak_fraction": 0.6}


def ratio(numerator, denominator):
  return None if numerator is None or not denominator else numerator / denominator


class Figures:
  """The run's figures: wall clock (`fig`), per CPU-second of this process (`cpu`), FLOPs, and
  every measured figure's windows (`windows`, timing.measure's `seen`), for the JSON line."""

  def __init__(self):
    self.fig, self.cpu, self.flops, self.windows = {}, {}, {}, {}

  def record(self, key, result, scale=1.0):
    self.fig[key], self.cpu[key] = scale * result["per_s"], scale * result["per_cpu_s"]

  def record_peak(self, results):
    """The best of the peak runners' medians is the peak."""
    peak = {name: r for name, r in results.items() if name.startswith("peak ")}
    self.fig["peak_detail"] = {name: r["per_s"] for name, r in peak.items()}
    self.record("peak_gflops", peak[max(peak, key=lambda name: peak[name]["per_s"])])


RATIOS = {"fit_ratio": ("train_full", "keras_fit"),
          "frozen_ratio": ("train_frozen", "train_full"),
          "pipeline_ratio": ("pipeline", "train_full"),
          "pipeline_service_w1_ratio": ("pipeline_service_w1", "pipeline"),
          "pipeline_service_w2_ratio": ("pipeline_service_w2", "pipeline"),
          "inference_ratio": ("inference", "keras_predict_10crop_images"),
          "peak_fraction": ("train_full_gflops", "peak_gflops"),
          "keras_peak_fraction": ("keras_fit_gflops", "peak_gflops"),
          "lever_inference_no_xla_ratio": ("lever_inference_no_xla", "keras_predict_10crop_images"),
          "lever_inference_vs_keras_xla": ("inference", "lever_keras_predict_xla"),
          "lever_inference_vs_keras_b10": ("inference", "lever_keras_predict_b10")}


def print_table(out):
  """The figures: wall clock, and per CPU-second of this process where it applies."""
  fig, cpu = out["figures"], out["per_cpu_second"]
  rows = [(k, v, cpu.get(k)) for k, v in fig.items()
          if not isinstance(v, dict) and not (v is None and k.startswith("lever"))]
  for key in ("peak_detail", "scaling_step_s", "scaling_ms_per_image",
              "scaling_cpu_ms_per_image"):
    rows += [(f"{key} [{k}]", v, None) for k, v in fig.get(key, {}).items()]
  rows += [(f"goal {k} >= {v}", out["goals"][k], None) for k, v in GOALS.items()]
  rows += [("others' CPU share per window, median / max",
            "{median:.2f} / {max:.2f}".format(**out["others_cpu"]), None),
           ("load average start / end", f"{out['load_start']} / {out['load_end']}", None),
           ("seconds", out["seconds"], None)]
  fmt = lambda v: "-" if v is None else (f"{v:,.2f}" if isinstance(v, float) else str(v))
  width = max(len(name) for name, _, _ in rows)
  print("\n" + f"{'figure':<{width}}  {'wall clock':>14}  {'per CPU-second':>14}")
  print("-" * (width + 32))
  for name, value, per_cpu in rows:
    print(f"{name:<{width}}  {fmt(value):>14}  {'' if per_cpu is None else fmt(per_cpu):>14}")
  print("-" * (width + 32))


def summarise(out, figs, start, section_s):
  """Adds the ratios, the goals met, the section times (section_s) and the machine's load to
  `out`, the run's JSON."""
  fig, cpu = figs.fig, figs.cpu
  for name, (num, den) in RATIOS.items():
    fig[name], cpu[name] = ratio(fig.get(num), fig.get(den)), ratio(cpu.get(num), cpu.get(den))
  out["goals"] = {k: (None if fig[k] is None else fig[k] >= v) for k, v in GOALS.items()}
  others = [o for r in figs.windows.values() for o in r["others_cpu"]] or [0.0]
  out.update(figures=fig, per_cpu_second=cpu, flops_per_step=figs.flops, section_s=section_s,
             others_cpu={"median": statistics.median(others), "max": max(others),
                         "windows": len(others)},
             windows=figs.windows, load_end=loadavg(), seconds=time.perf_counter() - start)
