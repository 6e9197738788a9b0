/**
 * A cheap structural check for JSON values, for hot paths where input is almost always already
 * well-typed (a send's body): zod's `z.json()` walks the same value through a lazy union and cost
 * as much CPU per send as the publish itself. It is conservative: it accepts only strings, finite
 * numbers, booleans, null, arrays and plain objects (prototype Object or null) of those; anything
 * else (a Date, a class instance, undefined, NaN, a cycle, nesting deeper than `maxDepth`) returns
 * false, and the caller falls back to the schema, which decides and words the error.
 */
export function isPlainJson(value: unknown, maxDepth = 64): boolean {
  switch (typeof value) {
    case "string":
    case "boolean":
      return true;
    case "number":
      return Number.isFinite(value);
    case "object":
      break;
    default:
      return false;
  }
  if (value === null) return true;
  if (maxDepth <= 0) return false;
  if (Array.isArray(value)) {
    for (const item of value) if (!isPlainJson(item, maxDepth - 1)) return false;
    return true;
  }
  const proto: unknown = Object.getPrototypeOf(value);
  if (proto !== Object.prototype && proto !== null) return false;
  for (const key in value) {
    // An own "__proto__" key (JSON.parse makes one) is one the schema drops: leave it to the schema.
    if (key === "__proto__" || !Object.hasOwn(value, key)) return false;
    if (!isPlainJson((value as Record<string, unknown>)[key], maxDepth - 1)) return false;
  }
  return true;
}
