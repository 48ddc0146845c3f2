import { lazy, Suspense } from "react";
import type { SeriesChartProps } from "../charts/Chart";
import { Loading } from "./Status";

const Chart = lazy(() => import("../charts/Chart"));

export function SeriesChart(props: SeriesChartProps) {
  return (
    <Suspense fallback={<Loading what="chart" />}>
      <Chart {...props} />
    </Suspense>
  );
}
