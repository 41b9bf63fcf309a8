'use strict'
// One logging path for the engine and the JS layer. LOG_LEVEL (error|warn|info|debug, any case;
// default info) sets the threshold; setLogger() routes everything into the user's logger
// (any object with error/warn/info/debug methods, e.g. pino or console).

const LEVELS = { error: 0, warn: 1, info: 2, debug: 3 }
let logger = null
let threshold = levelOf(process.env.LOG_LEVEL)

function levelOf(v) {
  const l = typeof v === 'string' ? v.toLowerCase() : ''
  return l in LEVELS ? l : 'info'
}

/** Log one line through the SDK's logging path. */
function log(level, message, meta) {
  if (LEVELS[level] > LEVELS[threshold]) return
  if (logger && typeof logger[level] === 'function') {
    try {
      logger[level](message, meta)
    } catch {
      // a broken user logger must not break the SDK
    }
    return
  }
  const line = `[blocks] ${message}`
  if (level === 'error') console.error(line)
  else if (level === 'warn') console.warn(line)
  else console.log(line)
}

/** Route SDK logs into `next` (null restores the console). */
function setLogger(next) {
  if (next !== null && next !== undefined && typeof next !== 'object' && typeof next !== 'function') {
    throw new TypeError('logger must be an object with error/warn/info/debug methods')
  }
  logger = next ?? null
}

/** Change the threshold at run time. */
function setLogLevel(level, nativeSet) {
  threshold = levelOf(level)
  if (nativeSet) nativeSet(threshold)
}

function currentLevel() {
  return threshold
}

module.exports = { log, setLogger, setLogLevel, currentLevel }
