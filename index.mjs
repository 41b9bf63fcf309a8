// ESM entry: the same module instance as the CommonJS entry, so classes (and `instanceof`) are
// shared between `import` and `require` in one process.
export * from './index.js'
export { default } from './index.js'
