// Fabric tasks written in JavaScript, built into a component with `fabric build`.
//
// Each export of the world in wit/world.wit is a named export of this module, its name in
// lowerCamelCase (`safe-div` is `safeDiv`); imports (the task's log and context) come from
// 'fabric:task/log@0.1.0' and 'fabric:task/context@0.1.0'. WIT types map to JavaScript as:
// s64/u64 -> BigInt, u32/f64 -> Number, string -> String, list<T> -> Array, tuple -> Array,
// record -> a plain object with lowerCamelCase fields, enum -> its case name as a string,
// result<T, string> -> return the value, or throw a string for the error.

import { log } from 'fabric:task/log@0.1.0';
import { taskId } from 'fabric:task/context@0.1.0';

/** Wraps a BigInt to a signed 64-bit value, like Rust's wrapping arithmetic. */
const s64 = (v) => BigInt.asIntN(64, v);

export function inc(x) {
  return s64(x + 1n);
}

export function add(a, b) {
  return s64(a + b);
}

/** ASCII punctuation, trimmed from both ends of a word. */
const EDGES = /^[!-\/:-@[-`{-~]+|[!-\/:-@[-`{-~]+$/g;

export function words(text) {
  return text
    .split(/\s+/)
    .map((w) => w.replace(EDGES, '').toLowerCase())
    .filter((w) => w.length > 0);
}

export function count(words) {
  const totals = new Map();
  for (const w of words) {
    totals.set(w, (totals.get(w) ?? 0) + 1);
  }
  // Most frequent first, ties by word in code-point order (as Rust and Python sort).
  return [...totals].sort(([a, x], [b, y]) => y - x || (a < b ? -1 : a > b ? 1 : 0));
}

export function spread(s, name) {
  return { name, values: [s.min, s.mean, s.max] };
}

export function rescale(s, k) {
  return s.values.map((v) => v * k);
}

export function safeDiv(a, b) {
  if (b === 0n) {
    throw `cannot divide ${a} by zero`;
  }
  // BigInt division truncates toward zero; round down instead, as Python's // does.
  const q = a / b;
  return (a % b !== 0n && (a < 0n) !== (b < 0n)) ? q - 1n : q;
}

export function fail(msg) {
  log('warn', `task ${taskId()} is about to fail`);
  throw new RangeError(msg);
}
