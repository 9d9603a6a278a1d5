// Import rules of the package layout (docs/architecture.md), checked by `make check-imports`
// (part of `make test`). Packages import each other only through '@shoal/<name>' (resolved
// here to src/index.ts through the "source" export condition) and '@shoal/<name>/commands'.
const ALLOWED = {
  common: [],
  protocol: ['common'],
  engine: ['common', 'protocol'],
  modelkit: ['common', 'protocol', 'engine'],
  device: ['common', 'protocol', 'engine'],
  controller: ['common', 'protocol'],
  devkit: ['common', 'protocol', 'engine', 'modelkit', 'device', 'controller'],
  cli: ['common', 'protocol', 'engine', 'modelkit', 'device', 'controller', 'devkit'],
  // test helpers: imported by tests only (see "production-never-imports-test-helpers")
  testkit: ['common', 'protocol', 'engine', 'modelkit', 'device', 'controller', 'devkit'],
};

// What production starts from: public entries, the shoal command, stand-alone scripts.
const ENTRY_POINTS = [
  '^packages/[^/]+/src/(index|commands|main)\\.ts$',
  '^packages/testkit/src/fleet\\.ts$',
  '^packages/controller/web/src/main\\.ts$',
  '^packages/devkit/src/bench/fleet-bench\\.ts$',
  '^packages/modelkit/src/quant/awq/ppl-table\\.ts$',
];

const layerRules = Object.entries(ALLOWED).map(([pkg, deps]) => ({
  name: `${pkg}-imports`,
  comment: `packages/${pkg}/src may import ${deps.length ? deps.map((d) => `@shoal/${d}`).join(', ') : 'no other package'}`,
  severity: 'error',
  from: { path: `^packages/${pkg}/src/` },
  to: { path: '^packages/', pathNot: [`^packages/(${[pkg, ...deps].join('|')})/`] },
}));

module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      comment: 'no import cycles anywhere (type-only imports included)',
      severity: 'error',
      from: {},
      to: { circular: true },
    },
    ...layerRules,
    {
      name: 'no-package-internals',
      comment: "another package only through its public entry points ('@shoal/<name>', '@shoal/<name>/commands')",
      severity: 'error',
      from: { path: '^packages/([^/]+)/' },
      to: { path: '^packages/', pathNot: ['^packages/$1/', '^packages/[^/]+/src/(index|commands)\\.ts$', '^packages/testkit/src/fleet\\.ts$'] },
    },
    {
      name: 'production-never-imports-test-helpers',
      severity: 'error',
      from: { path: '^packages/[^/]+/src/', pathNot: '^packages/testkit/' },
      to: { path: '^packages/([^/]+/test/|testkit/)' },
    },
    {
      name: 'dashboard-is-self-contained',
      comment: 'the browser bundle imports nothing from the server packages',
      severity: 'error',
      from: { path: '^packages/controller/web/' },
      to: { path: '^packages/', pathNot: '^packages/controller/web/' },
    },
    {
      name: 'no-orphans',
      comment: 'a module nothing imports is dead code (entry points and tests aside)',
      severity: 'error',
      from: {
        orphan: true,
        pathNot: [
          '(^|/)\\.[^/]+\\.(js|cjs|mjs|ts|json)$',
          '\\.d\\.ts$',
          '/test/.*\\.test\\.ts$',
          '^packages/[^/]+/src/(index|commands|main)\\.ts$',
          '^packages/controller/web/vite\\.config\\.ts$',
          '^packages/devkit/src/bench/fleet-bench\\.ts$',
          '^packages/modelkit/src/quant/awq/ppl-table\\.ts$',
          '^packages/testkit/src/fleet\\.ts$',
        ],
      },
      to: {},
    },
    {
      name: 'no-unreachable',
      comment: 'every module is reachable from a package entry point (dead code otherwise)',
      severity: 'error',
      from: { path: ENTRY_POINTS },
      to: { path: '^packages/[^/]+/src/', pathNot: ENTRY_POINTS, reachable: false },
    },
    {
      name: 'not-to-unresolvable',
      severity: 'error',
      from: {},
      to: { couldNotResolve: true },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '(^|/)(dist|node_modules)/' },
    tsPreCompilationDeps: true,
    combinedDependencies: false,
    enhancedResolveOptions: {
      exportsFields: ['exports'],
      conditionNames: ['source', 'import', 'node', 'default'],
      extensions: ['.ts', '.js', '.mjs', '.cjs', '.json', '.d.ts'],
      mainFields: ['module', 'main', 'types'],
    },
    reporterOptions: { text: { highlightFocused: true } },
  },
};
