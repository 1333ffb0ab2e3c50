// Builds the page into dist/ (git-ignored): src/app.js bundled by esbuild with its npm
// dependencies, and the HTML and CSS copied beside it. `npm run build`; tests/run.sh runs it.
import { build } from "esbuild"
import { copyFile, mkdir, rm } from "node:fs/promises"

const src = new URL("./src/", import.meta.url)
const dist = new URL("./dist/", import.meta.url)
await rm(dist, { recursive: true, force: true })
await mkdir(dist)
await build({
  entryPoints: [new URL("app.js", src).pathname],
  outfile: new URL("app.js", dist).pathname,
  bundle: true,
  format: "esm",
  target: "es2022",
  minify: true,
  legalComments: "linked",
  logLevel: "warning",
})
for (const name of ["index.html", "style.css"]) await copyFile(new URL(name, src), new URL(name, dist))
