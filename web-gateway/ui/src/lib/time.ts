// Conversions between protobuf Timestamps, Dates, and the value of <input type="datetime-local">
// (local time, no zone), plus short human renderings.
import { timestampDate, timestampFromDate, type Timestamp } from "@bufbuild/protobuf/wkt";

export function tsDate(ts: Timestamp | undefined): Date | undefined {
  return ts ? timestampDate(ts) : undefined;
}

export function toTimestamp(d: Date): Timestamp {
  return timestampFromDate(d);
}

export function formatTs(ts: Timestamp | undefined): string {
  const d = tsDate(ts);
  return d ? formatDate(d) : "—";
}

export function formatDate(d: Date): string {
  return d.toLocaleString(undefined, {
    year: "numeric",
    month: "short",
    day: "2-digit",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
  });
}

/** The date and the time of formatTs apart, for a narrow column that shows them on two lines. */
export function formatTsParts(ts: Timestamp | undefined): [string, string] {
  const d = tsDate(ts);
  if (!d) return ["—", ""];
  return [
    d.toLocaleDateString(undefined, { year: "numeric", month: "short", day: "2-digit" }),
    d.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" }),
  ];
}

/** `<input type="datetime-local" step="1">` value (local wall time) of a Date. */
export function toLocalInput(d: Date): string {
  const p = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

/** The Date of a datetime-local value, or undefined when empty or malformed. */
export function fromLocalInput(v: string | null | undefined): Date | undefined {
  if (!v) return undefined;
  const d = new Date(v);
  return Number.isNaN(d.getTime()) ? undefined : d;
}

/** ISO string for URLs; undefined for invalid input. */
export function isoOrUndefined(v: string | null | undefined): Date | undefined {
  if (!v) return undefined;
  const d = new Date(v);
  return Number.isNaN(d.getTime()) ? undefined : d;
}
