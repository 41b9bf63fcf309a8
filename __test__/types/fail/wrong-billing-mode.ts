import { TaskClient } from '../../../index.js'
// this file must NOT compile: billingMode only accepts 'free' | 'paid'
await TaskClient.create({ billingMode: 'gold' })
