// OpenClaw supplies this module to the plugins it loads; it is not a dependency of clawmesh.
declare module "openclaw/plugin-sdk/plugin-entry" {
  export function definePluginEntry<T extends { id: string; register(api: never): void }>(entry: T): T;
}
