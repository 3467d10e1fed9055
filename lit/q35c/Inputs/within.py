"""within.py PLAN.json BENCH.json PERCENT: q35c plan's decode cycles a token
against those q35-rt bench measured on the compiled program; exits 1 if
they differ by more than PERCENT."""
import json
import sys

plan = json.load(open(sys.argv[1]))
bench = json.load(open(sys.argv[2]))
percent = float(sys.argv[3])
predicted, measured = plan["cycles_per_token"], bench["decode_cycles_per_token"]
off = 100.0 * abs(predicted - measured) / measured
print(f"plan {predicted} cycles, simulated {measured:.0f}: {off:.1f} % apart (at most {percent})")
print(f"install bound: plan {plan['install_bound_cycles_per_token']:.0f}, simulated {bench['install_bound_cycles_per_token']:.0f}")
sys.exit(0 if off <= percent else 1)
