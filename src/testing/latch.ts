/** A gate a test opens when it chooses: how a "slow" agent is held without sleeping. */
export class Latch {
  readonly opened: Promise<void>;
  open!: () => void;
  constructor() {
    this.opened = new Promise((resolve) => (this.open = resolve));
  }
}
