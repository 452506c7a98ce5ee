// Measures of text that never leave the page: only the numbers do.

// Character edit distance / the longer length, after trimming the common prefix and suffix.
export function editRatio(a, b) {
  let start = 0, endA = a.length, endB = b.length, distance;
  let longer = Math.max(endA, endB);
  if (!longer) return 0;
  while (start < endA && start < endB && a[start] == b[start]) start++;
  while (endA > start && endB > start && a[endA - 1] == b[endB - 1]) endA--, endB--;
  a = a.slice(start, endA);
  b = b.slice(start, endB);
  distance = Math.max(a.length, b.length);
  // Over a million cells the exact distance costs too much: the changed span's length stands in for it.
  if (a.length * b.length < 1e6) {
    let previous = [], row;
    for (let j = 0; j <= b.length; j++) previous[j] = j;
    for (let i = 1; i <= a.length; i++) {
      row = [i];
      for (let j = 1; j <= b.length; j++) {
        row[j] = Math.min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + (a[i - 1] != b[j - 1]));
      }
      previous = row;
    }
    distance = previous[b.length];
  }
  return Math.round(distance / longer * 1e3) / 1e3;
}

// Word 1- and 2-shingles.
function shingles(text) {
  let words = text.split(/[^\p{L}\p{N}]+/u).filter(Boolean), set = new Set(words);
  for (let i = 1; i < words.length; i++) set.add(words[i - 1] + " " + words[i]);
  return set;
}

// Jaccard similarity of the word shingles.
export function similarity(a, b) {
  let common = 0;
  a = shingles(a);
  b = shingles(b);
  a.forEach(x => common += b.has(x));
  return Math.round(common / (a.size + b.size - common) * 1e3) / 1e3 || 0;
}
