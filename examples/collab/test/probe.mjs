import puppeteer from "puppeteer-core"
const base = "http://127.0.0.1:4599"
const browser = await puppeteer.launch({ executablePath: "/usr/bin/chromium", args: ["--no-sandbox"], headless: true })
const t0 = Date.now()
const room = "probe" + Date.now()
const pages = []
for (const name of ["Ann", "Bob"]) {
  const context = await browser.createBrowserContext()
  const page = await context.newPage()
  page.on("console", (m) => console.log(Date.now() - t0, name, "console:", m.type(), m.text()))
  page.on("request", (r) => { if (r.method() !== "GET" || r.url().includes("live")) console.log(Date.now() - t0, name, "req", r.method(), r.url().slice(40)) })
  page.on("requestfinished", (r) => { if (r.method() === "POST") console.log(Date.now() - t0, name, "done", r.response()?.status(), r.method(), r.url().slice(40)) })
  page.on("requestfailed", (r) => console.log(Date.now() - t0, name, "failed", r.method(), r.url().slice(40), r.failure()?.errorText))
  await page.goto(`${base}/examples/collab/?room=${room}&name=${name}`)
  pages.push(page)
}
for (const page of pages) await page.waitForFunction(() => document.body.dataset.status === "connected", { timeout: 30000, polling: 50 })
console.log(Date.now() - t0, "connected")
await pages[0].focus("#editor")
for (const k of "Saturday") await pages[0].keyboard.type(k)
await new Promise((r) => setTimeout(r, 3000))
for (const page of pages) console.log(await page.$eval("#editor", (t) => t.value))
const r = await fetch(`${base}/v1/yjs/collab/docs/${room}?offset=-1`)
console.log("server bytes", (await r.arrayBuffer()).byteLength)
await browser.close()
