'use strict'
// Options that cross into the engine travel as JSON. This checks a value is JSON data and names the
// first field that is not (a function, symbol, bigint, NaN/Infinity, raw bytes), instead of a
// conversion error from deep inside the binding. `undefined` object fields count as absent.

const { InvalidArgumentError } = require('./errors.js')

function jsonData(value, what, path = what) {
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return value
    case 'number':
      if (!Number.isFinite(value)) throw new InvalidArgumentError(`${path} must be a finite number, got ${value}`)
      return value
    case 'undefined':
      throw new InvalidArgumentError(`${path} is undefined; leave it out or give a value`)
    case 'object': {
      if (value === null) return null
      if (typeof value.toJSON === 'function') return jsonData(value.toJSON(), what, path)
      if (ArrayBuffer.isView(value) || value instanceof ArrayBuffer) {
        throw new InvalidArgumentError(`${path} is binary data; send files with filePart(), or base64-encode it`)
      }
      if (Array.isArray(value)) return value.map((v, i) => jsonData(v, what, `${path}[${i}]`))
      const out = {}
      for (const [k, v] of Object.entries(value)) if (v !== undefined) out[k] = jsonData(v, what, `${path}.${k}`)
      return out
    }
    default:
      throw new InvalidArgumentError(`${path} must be JSON data, got a ${typeof value}`)
  }
}

/** `options` must be a plain object (not an array); returns its JSON form. */
function jsonOptions(options, what) {
  if (options === null || typeof options !== 'object' || Array.isArray(options)) {
    throw new InvalidArgumentError(`${what} needs an options object`)
  }
  return jsonData(options, what)
}

module.exports = { jsonData, jsonOptions }
