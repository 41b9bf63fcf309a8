// `@blocks-network/sdk/stream`: the stream types and classes.
export { StreamHandle, StreamRef } from './index.js'
export type { StreamDescriptor, StreamError, CreateStreamOptions } from './index.js'
