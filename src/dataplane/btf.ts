/** Struct layouts as recorded in the BTF of a compiled BPF object. */
import koffi from 'koffi';
import { BTF_KIND_ENUM, BTF_KIND_STRUCT, BpfError, native, takeLibbpfLog } from './libbpf.js';

export interface BtfMember {
  readonly name: string;
  readonly offset: number; // bytes
  readonly size: number;
}

export interface BtfStruct {
  readonly name: string;
  readonly size: number;
  readonly members: readonly BtfMember[];
}

/** Reads the named structs; throws if one is missing or has a bitfield. */
export function readBtfStructs(objectPath: string, names: readonly string[]): Map<string, BtfStruct> {
  const btf = native.btfParse(objectPath, null);
  if (!btf) throw new BpfError(`cannot read BTF from ${objectPath}: ${takeLibbpfLog().trim() || 'no BTF section'}`);
  try {
    const result = new Map<string, BtfStruct>();
    for (const name of names) {
      const id = native.btfFindByNameKind(btf, name, BTF_KIND_STRUCT);
      if (id < 0) throw new Error(`struct ${name} is not in the BTF of ${objectPath}`);
      const type = native.btfTypeById(btf, id);
      const [, info, size] = koffi.decode(type, 'uint32_t', 3) as number[];
      const vlen = info! & 0xffff;
      const kindFlag = info! >>> 31;
      const raw = vlen > 0 ? (koffi.decode(type, 12, 'uint32_t', vlen * 3) as number[]) : [];
      const members: BtfMember[] = [];
      for (let i = 0; i < vlen; i++) {
        const [nameOff, typeId, offsetField] = raw.slice(i * 3, i * 3 + 3) as [number, number, number];
        const bitfieldSize = kindFlag ? offsetField >>> 24 : 0;
        const bitOffset = kindFlag ? offsetField & 0xffffff : offsetField;
        if (bitfieldSize !== 0 || bitOffset % 8 !== 0) throw new Error(`${name} has a bitfield member; the ABI allows none`);
        members.push({
          name: native.btfNameByOffset(btf, nameOff) as string,
          offset: bitOffset / 8,
          size: Number(native.btfResolveSize(btf, typeId)),
        });
      }
      result.set(name, { name, size: size!, members });
    }
    return result;
  } finally {
    native.btfFree(btf);
  }
}

/** An enum's constants (name -> value) as recorded in the BTF of an object. */
export function readBtfEnum(objectPath: string, name: string): Map<string, number> {
  const btf = native.btfParse(objectPath, null);
  if (!btf) throw new BpfError(`cannot read BTF from ${objectPath}: ${takeLibbpfLog().trim() || 'no BTF section'}`);
  try {
    const id = native.btfFindByNameKind(btf, name, BTF_KIND_ENUM);
    if (id < 0) throw new Error(`enum ${name} is not in the BTF of ${objectPath}`);
    const type = native.btfTypeById(btf, id);
    const [, info] = koffi.decode(type, 'uint32_t', 2) as number[];
    const vlen = info! & 0xffff;
    const raw = vlen > 0 ? (koffi.decode(type, 12, 'int32_t', vlen * 2) as number[]) : [];
    const values = new Map<string, number>();
    for (let i = 0; i < vlen; i++) values.set(native.btfNameByOffset(btf, raw[i * 2]!) as string, raw[i * 2 + 1]!);
    return values;
  } finally {
    native.btfFree(btf);
  }
}
