'use strict'
// Listener sets with safe invocation: a throwing (or rejecting) callback is reported to the
// `error` listeners (or a warning) and never stops the others.

class Listeners {
  #sets = new Map()
  #onFailure

  /** @param {(error: unknown, context: object) => void} onFailure */
  constructor(onFailure) {
    this.#onFailure = onFailure
  }

  /** Add a callback; returns an idempotent unsubscribe function. */
  add(type, cb) {
    if (typeof cb !== 'function') throw new TypeError(`${type} listener must be a function`)
    let set = this.#sets.get(type)
    if (!set) this.#sets.set(type, (set = new Set()))
    const entry = { cb }
    set.add(entry)
    return () => set.delete(entry)
  }

  has(type) {
    return (this.#sets.get(type)?.size ?? 0) > 0
  }

  /** Call one callback safely with `args` (an array). */
  invoke(type, cb, args, context) {
    try {
      const r = cb(...args)
      if (r && typeof r.then === 'function') r.then(undefined, (err) => this.#onFailure(err, { ...context, callbackType: type }))
    } catch (err) {
      this.#onFailure(err, { ...context, callbackType: type })
    }
  }

  /** Call every callback of a type with `args` (an array), in registration order. */
  emit(type, args, context) {
    const set = this.#sets.get(type)
    if (!set) return
    for (const entry of [...set]) this.invoke(type, entry.cb, args, context)
  }

  clear() {
    this.#sets.clear()
  }
}

module.exports = { Listeners }
