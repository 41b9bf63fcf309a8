import { TaskClient } from '../../../index.js'
// must NOT compile: billingMode only accepts 'free' | 'paid'
export const c = () => TaskClient.create({ billingMode: 'gold' })
