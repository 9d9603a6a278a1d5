import type { Command } from 'commander';

// Placeholder until this area's commands land; replaced by its owner.
export function registerToolCommands(_program: Command): void {}
