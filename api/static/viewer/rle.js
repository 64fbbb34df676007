// COCO run-length encoded masks, as pycocotools writes them: runs of 0s and 1s alternating (starting with 0s) over
// the pixels in column-major order; "compressed" counts are a string where each run is a signed LEB128-like number
// (5 bits per character, 0x20 = more follows, 0x10 = sign on the last, +48 to be printable), and each run after the
// second is stored as its difference from the run two before it.

/** Run lengths of a compressed counts string (pycocotools' rleFrString). */
export function decodeCounts(counts) {
  const runs = [];
  let p = 0;
  while (p < counts.length) {
    let x = 0;
    let k = 0;
    let more = true;
    while (more) {
      if (p >= counts.length) throw new Error("RLE counts end inside a number");
      const c = counts.charCodeAt(p) - 48;
      if (c < 0 || c > 63) throw new Error(`RLE counts hold an invalid character at ${p}`);
      x |= (c & 0x1f) << (5 * k);
      more = (c & 0x20) !== 0;
      p += 1;
      k += 1;
      if (!more && (c & 0x10)) x |= -1 << (5 * k);
    }
    if (runs.length > 2) x += runs[runs.length - 2];
    if (x < 0) throw new Error("RLE counts decode to a negative run");
    runs.push(x);
  }
  return runs;
}

/** {size: [h, w], counts} (compressed string, or a list of runs) → Uint8Array of h*w, row-major, 1 = mask. */
export function decodeMask(rle) {
  const [height, width] = rle.size;
  const runs = typeof rle.counts === "string" ? decodeCounts(rle.counts) : rle.counts;
  const total = height * width;
  const mask = new Uint8Array(total);
  let pos = 0;
  for (let r = 0; r < runs.length; r++) {
    let n = runs[r];
    if (pos + n > total) throw new Error(`RLE runs cover ${pos + n} pixels, the mask has ${total}`);
    if (r % 2 === 1) {
      while (n > 0) {  // down the column, then on to the next one
        const x = Math.floor(pos / height);
        const y = pos - x * height;
        const take = Math.min(n, height - y);
        for (let i = 0, at = y * width + x; i < take; i++, at += width) mask[at] = 1;
        pos += take;
        n -= take;
      }
    } else {
      pos += n;
    }
  }
  if (pos !== total) throw new Error(`RLE runs cover ${pos} pixels, the mask has ${total}`);
  return mask;
}
