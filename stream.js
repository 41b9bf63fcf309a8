'use strict'
// `@blocks-network/sdk/stream`: the stream classes, for type checks and `instanceof`.
const { StreamHandle, StreamRef } = require('./lib/stream.js')
exports.StreamHandle = StreamHandle
exports.StreamRef = StreamRef
