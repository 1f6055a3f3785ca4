// How a metric value and a token id are printed (tooltip, panel, legend, controls).

/** A token id, labelled as one (a bare "#7042" beside a probability reads as a rank). */
export function idLabel(id: number): string {
  return `id ${id}`;
}

export function fmt(v: number): string {
  if (!Number.isFinite(v)) return "–";
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(2);
  return a >= 100 ? v.toFixed(0) : a >= 10 ? v.toFixed(1) : v.toFixed(3);
}
