// commands.ts — which package declares which `shoal` command. The names, terms and
// summaries here are what `shoal --help` prints without loading any package; the
// cli test checks them against the packages' own declarations.
import type { Command } from 'commander';

export type Register = (program: Command) => void;

export interface CommandSummary {
  name: string;
  /** How the command lists in `shoal --help` ("run [options]"). */
  term: string;
  summary: string;
}

export interface CommandGroup {
  pkg: string;
  load(): Promise<Register>;
  commands: CommandSummary[];
}

const c = (name: string, summary: string, options = true): CommandSummary => ({ name, term: options ? `${name} [options]` : name, summary });

export const COMMAND_GROUPS: readonly CommandGroup[] = [
  {
    pkg: '@shoal/engine',
    load: async () => (await import('@shoal/engine/commands')).registerEngineCommands,
    commands: [
      c('run', 'generate text with a local model (streams to stdout)'),
      c('bench-serve', 'serving benchmark: TTFT per chat turn with and without the prefix cache; decode cost of a JSON schema'),
      c('bench', 'benchmark a model: load, prefill, decode, TTFT, peak RSS, % of memory roofline'),
    ],
  },
  {
    pkg: '@shoal/modelkit',
    load: async () => (await import('@shoal/modelkit/commands')).registerToolCommands,
    commands: [
      c('gen-model', 'write a synthetic random-weight checkpoint with a real LLaMA-family shape (HF layout, optional AutoAWQ INT4)'),
      c('quantize', 'quantize an F32/F16/BF16 checkpoint: INT4 AutoAWQ gemm, or 2/3/4/8-bit GPTQ / EfficientQAT layouts'),
      c('eval', 'evaluate models', false),
      { ...c('pull', 'download a model from the Hugging Face Hub into the Hugging Face cache (resumable, sha256-checked)'), term: 'pull [options] <repo>' },
    ],
  },
  {
    pkg: '@shoal/device',
    load: async () => (await import('@shoal/device/commands')).registerDeviceCommands,
    commands: [
      c('device', 'Run the device daemon (MQTT agent, model store + OTA, local OpenAI-compatible HTTP API)'),
      c('doctor', 'check this machine for a device: CPU kernels, GPU/CUDA and JetPack, memory for a model, broker, clock sync, store; what to fix'),
    ],
  },
  {
    pkg: '@shoal/controller',
    load: async () => (await import('@shoal/controller/commands')).registerControllerCommands,
    commands: [
      c('controller', 'run the fleet controller (MQTT ingest, rollouts, HTTP API, artifact server)'),
      c('keygen', 'create the fleet signing key pair (ed25519, PEM): fleet.key (0600) and fleet.pub'),
      c('package', 'build a signed model package: the files plus manifest.json (sizes, sha256, ed25519 signature)'),
      c('fleet', 'operate the fleet through the controller API'),
    ],
  },
  {
    pkg: '@shoal/devkit',
    load: async () => (await import('@shoal/devkit/commands')).registerDevkitCommands,
    commands: [
      c('sim', 'simulated devices for load tests (state, telemetry, command replies, desired-state convergence)'),
      c('up', 'quick start (make demo): stories260K quantized to INT4, a broker, a controller and device daemons on this machine, the model rolled out in waves, a story from each device'),
    ],
  },
];

export function groupOf(name: string): CommandGroup | undefined {
  return COMMAND_GROUPS.find((g) => g.commands.some((x) => x.name === name));
}
