// uPlot charts, loaded lazily (their own chunk and stylesheet). Each chart also renders its data
// as a table for screen readers and for checking numbers (the end-to-end test reads it).
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { useEffect, useRef } from "react";

export interface SeriesChartProps {
  /** x values: seconds since the epoch. */
  xs: number[];
  /** y values; null leaves a gap. */
  ys: (number | null)[];
  label: string;
  kind: "bars" | "line" | "steps";
  /** For step charts of non-numeric values: the label of each y index. */
  yLabels?: string[];
  height?: number;
}

function cssVar(name: string, fallback: string): string {
  const v = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  return v || fallback;
}

export default function SeriesChart({ xs, ys, label, kind, yLabels, height = 260 }: SeriesChartProps) {
  const box = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const stroke = cssVar("--accent", "#2563eb");
    const fg = cssVar("--muted", "#666");
    const grid = cssVar("--border", "#ddd");
    const axis = { stroke: fg, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 } };
    const paths =
      kind === "bars"
        ? uPlot.paths.bars!({ size: [0.8, 60] })
        : kind === "steps"
          ? uPlot.paths.stepped!({ align: 1 })
          : undefined;
    const yAxis =
      yLabels !== undefined
        ? {
            ...axis,
            size: 110,
            splits: () => yLabels.map((_, i) => i),
            values: (_u: uPlot, vals: number[]) => vals.map((v) => yLabels[v] ?? ""),
          }
        : axis;
    const opts: uPlot.Options = {
      width: Math.max(240, el.clientWidth),
      height,
      series: [
        {},
        {
          label,
          stroke,
          width: 2,
          fill: kind === "bars" ? `${stroke}55` : undefined,
          paths,
          points: { show: kind !== "bars", size: 6, fill: stroke },
          value: yLabels ? (_u, v) => (v == null ? "—" : (yLabels[v] ?? String(v))) : undefined,
        },
      ],
      axes: [axis, yAxis],
      scales: yLabels ? { y: { range: [-0.5, Math.max(0.5, yLabels.length - 0.5)] } } : { y: { range: (_u, _min, max) => [0, Math.max(1, max * 1.1)] } },
      legend: { live: true },
      cursor: { drag: { x: false, y: false } },
    };
    if (kind === "line" || kind === "steps") {
      opts.scales = yLabels ? opts.scales : { y: { auto: true } };
    }
    const chart = new uPlot(opts, [xs, ys], el);
    const ro = new ResizeObserver(() => chart.setSize({ width: Math.max(240, el.clientWidth), height }));
    ro.observe(el);
    return () => {
      ro.disconnect();
      chart.destroy();
    };
  }, [xs, ys, label, kind, yLabels, height]);
  return <div ref={box} className="chart" role="img" aria-label={label} />;
}
