/**
 * A worker thread that runs packets through a program over and over
 * (BPF_PROG_TEST_RUN) while the main thread changes maps, and reports what
 * the program did with each: its action and the destination MAC it wrote.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { orThrow } from '../../src/dataplane/libbpf.js';
import { nativeTesting } from './native-testing.js';

export interface LoopRequest {
  readonly programFd: number;
  readonly packets: Uint8Array;
  readonly packetLength: number;
  readonly count: number;
  readonly iterations: number;
}

export interface LoopResult {
  readonly actions: Uint8Array;
  /** 6 bytes per run: the destination MAC of the output. */
  readonly macs: Uint8Array;
}

if (parentPort && workerData) {
  const request = workerData as LoopRequest;
  const actions = new Uint8Array(request.iterations);
  const macs = new Uint8Array(request.iterations * 6);
  orThrow(
    nativeTesting.testRunOutputs(
      request.programFd,
      request.packets,
      request.packetLength,
      request.count,
      request.iterations,
      actions,
      macs,
      6,
    ),
    'packet loop',
  );
  parentPort.postMessage({ actions, macs } satisfies LoopResult);
}
