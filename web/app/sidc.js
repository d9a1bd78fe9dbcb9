// CoT type -> MIL-STD-2525C symbol identification code (SIDC), drawn with milsymbol.
//
// A CoT atom type is a 2525 SIDC written with dashes: `a-{affiliation}-{dimension}-{function…}`.
// The mapping is letter for letter (as ATAK does it):
//
//   a-f-A-M-F-Q   ->  S F A P MFQ--- -----   ("SFAPMFQ--------", friendly fixed-wing drone)
//   ^ ^ ^ ^^^^^       ^ ^ ^ ^ ^^^^^^ ^^^^^
//   | | | function    | | | | function ID (6, padded with '-'), then 5 modifier/country '-'
//   | | dimension     | | | status: P (present)
//   | affiliation     | | battle dimension: P space, A air, G ground, S sea, U subsurface, F SOF
//   atom              | affiliation: P U A F N S H G W M D L J K O (CoT uses the same letters)
//                     coding scheme S (warfighting)
//
// Unknown affiliation letters become U (unknown); unknown dimensions Z (unknown); a function
// milsymbol cannot draw is dropped (frame only). Generalized items keep only `a-h-A`, which
// still gives affiliation and dimension. Non-atom types (`b-…`, `u-…`, `t-…`) get no symbol.

const AFFILIATIONS = new Set("PUAFNSHGWMDLJKO");
const DIMENSIONS = new Set("PAGSUFZX");

export function sidcFor(cotType) {
  const atoms = String(cotType || "").split("-");
  if (atoms[0] !== "a" || atoms.length < 3) return null;
  let aff = (atoms[1] || "").toUpperCase();
  if (aff.length !== 1 || !AFFILIATIONS.has(aff)) aff = "U";
  let dim = (atoms[2] || "").toUpperCase();
  if (dim.length !== 1 || !DIMENSIONS.has(dim)) dim = "Z";
  const fn = atoms.slice(3).join("").toUpperCase().replace(/[^A-Z0-9]/g, "").slice(0, 6);
  return `S${aff}${dim}P${fn.padEnd(6, "-")}-----`;
}

// Drawn symbols are cached by SIDC: a picture of 2,000 tracks uses a handful of distinct
// symbols, so each is rasterised once and blitted (drawImage) every frame.
const cache = new Map();

export function symbolFor(cotType, size = 16) {
  const sidc = sidcFor(cotType) || "SUZP-----------";
  const key = `${sidc}@${size}`;
  let entry = cache.get(key);
  if (!entry) {
    let symbol = new ms.Symbol(sidc, { size });
    if (!symbol.isValid()) symbol = new ms.Symbol(`${sidc.slice(0, 4)}------------`.slice(0, 15), { size });
    const anchor = symbol.getAnchor();
    entry = { sidc, canvas: symbol.asCanvas(), ax: anchor.x, ay: anchor.y };
    cache.set(key, entry);
  }
  return entry;
}
