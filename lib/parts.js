'use strict'
// Request-part helpers (caller side).

const { InvalidArgumentError } = require('./errors.js')

function partOptions(options, defaultPartId) {
  if (options === undefined || options === null) return { partId: defaultPartId }
  if (typeof options === 'string') return { partId: options }
  if (typeof options !== 'object') throw new InvalidArgumentError('part options must be an object or a partId string')
  return { ...options, partId: options.partId ?? defaultPartId }
}

/**
 * A text request part: `{ partId, text }` (`partId` defaults to `"text"`).
 * @param {string} text
 * @param {string | { partId?: string, contentType?: string }} [options]
 */
function textPart(text, options) {
  if (typeof text !== 'string') throw new InvalidArgumentError(`textPart(text) needs a string, got ${typeof text}`)
  const { partId, contentType } = partOptions(options, 'text')
  const part = { partId, text }
  if (contentType) part.contentType = contentType
  return part
}

module.exports = { textPart }
