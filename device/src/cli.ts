import type { Command } from 'commander';

// Placeholder until this area's commands land; replaced by its owner.
export function registerDeviceCommands(_program: Command): void {}
