import assert from 'node:assert/strict';
import { test } from 'node:test';
import { IdPool } from '../../src/core/id-pool.js';

test('ids are handed out from first, and freed ones are reused oldest first', () => {
  const pool = new IdPool(1, 6);
  assert.deepEqual([pool.allocate(), pool.allocate(), pool.allocate()], [1, 2, 3]);
  pool.release(2);
  pool.release(1);
  assert.equal(pool.available, 4);
  assert.deepEqual([pool.allocate(), pool.allocate(), pool.allocate(), pool.allocate(), pool.allocate()], [2, 1, 4, 5, undefined]);
  assert.equal(pool.available, 0);
  assert.throws(() => pool.release(6), /outside pool/);
});

test('ids taken over from a previous daemon are never handed out until released', () => {
  const pool = new IdPool(1, 8, [2, 5, 9, 0]);
  assert.equal(pool.available, 5);
  const handed = Array.from({ length: 6 }, () => pool.allocate());
  assert.deepEqual(handed, [1, 3, 4, 6, 7, undefined]);
  pool.release(5);
  assert.deepEqual([pool.allocate(), pool.allocate()], [5, undefined]);
});

test('releasing a taken-over id not reached yet does not hand it out twice', () => {
  const pool = new IdPool(1, 5, [3]);
  pool.release(3);
  const handed = [pool.allocate(), pool.allocate(), pool.allocate(), pool.allocate(), pool.allocate()];
  assert.deepEqual(handed, [1, 2, 3, 4, undefined]);
});
