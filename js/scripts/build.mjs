// Bundle the widget into r3nb/static/ (esbuild), or with --check verify that the
// committed bundle is what the sources build to (CI: a stale bundle fails the build).
import * as esbuild from "esbuild";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const check = process.argv.includes("--check");
const target = new URL("../../r3nb/static/", import.meta.url).pathname;
const outdir = check ? mkdtempSync(join(tmpdir(), "r3nb-widget-")) : target;
const common = { bundle: true, minify: true, logLevel: "warning" };

await esbuild.build({
  ...common,
  entryPoints: ["src/widget.js"],
  format: "esm",
  target: "es2020",
  outfile: join(outdir, "widget.js"),
});
await esbuild.build({ ...common, entryPoints: ["src/widget.css"], outfile: join(outdir, "widget.css") });

if (check) {
  for (const name of ["widget.js", "widget.css"]) {
    if (!readFileSync(join(outdir, name)).equals(readFileSync(join(target, name)))) {
      console.error(`r3nb/static/${name} is stale: run \`make js\` and commit it`);
      process.exit(1);
    }
  }
  console.log("widget bundle is up to date");
}
