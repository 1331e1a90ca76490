/** The thread loadConfigFile (config.ts) starts: reads and checks one config file, answers, ends. */
import { parentPort, workerData } from 'node:worker_threads';
import { type ConfigAnswer, configErrorFields, parseConfig, readConfigText } from './config.js';

const { path } = workerData as { path: string };
let answer: ConfigAnswer;
try {
  answer = { config: parseConfig(readConfigText(path), path) };
} catch (error) {
  answer = { error: configErrorFields(error) };
}
parentPort!.postMessage(answer);
