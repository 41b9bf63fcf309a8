// filePart takes bytes, not a string.
import { filePart } from '../../../index.js'
filePart('hello')
