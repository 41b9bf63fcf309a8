import { TaskClient } from '../../../index.js'
declare const client: TaskClient
// must NOT compile: duration is a number
await client.sendMessage({ agentName: 'x', taskKind: 'pipe', duration: '5' })
