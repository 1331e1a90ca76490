/** How many VIPs, backends and tracked flows a balancer holds: the sizes of its maps (lbctl start --max-vips, ...). */
export interface BalancerLimits {
  readonly maxVips: number;
  readonly maxBackends: number;
  readonly flowTableSize: number;
}

export const DEFAULT_LIMITS: BalancerLimits = { maxVips: 4096, maxBackends: 65536, flowTableSize: 1_048_576 };
