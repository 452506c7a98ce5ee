// Builds dist/widget.min.js from src/main.js: esbuild bundles the ES modules into one IIFE, terser minifies it,
// renaming top-level names and every property that ends in "_" (the widget's internal state).
//   cd widget && npm ci && npm run build            writes dist/widget.min.js
//   node build.mjs --stdout                         prints the build instead (the test compares the two)
import { build } from "esbuild";
import { writeFileSync, mkdirSync } from "node:fs";
import { minify } from "terser";

const here = new URL(".", import.meta.url).pathname;
const bundled = await build({
  entryPoints: [here + "src/main.js"], bundle: true, format: "iife", target: "es2022", write: false,
  legalComments: "none", charset: "utf8",
});
const { code } = await minify(bundled.outputFiles[0].text, {
  ecma: 2022, toplevel: true,
  compress: { passes: 2, unsafe: true, unsafe_arrows: true },
  mangle: { properties: { regex: /_$/ } },
  format: { comments: false },
});
const output = code + "\n";
if (process.argv.includes("--stdout")) process.stdout.write(output);
else {
  mkdirSync(here + "dist", { recursive: true });
  writeFileSync(here + "dist/widget.min.js", output);
}
