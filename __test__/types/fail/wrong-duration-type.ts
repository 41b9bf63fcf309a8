import type { TaskClient } from '../../../index.js'
// must NOT compile: duration is a number
export const send = (client: TaskClient) => client.sendMessage({ agentName: 'x', taskKind: 'pipe', duration: '5' })
