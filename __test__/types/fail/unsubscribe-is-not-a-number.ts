import type { TaskSession } from '../../../index.js'
declare const session: TaskSession
// must NOT compile: listeners return an unsubscribe function
const n: number = session.onTerminal(() => {})
export { n }
