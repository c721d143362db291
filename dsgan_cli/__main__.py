"""``python -m dsgan_cli`` (also what ``accelerate launch -m dsgan_cli`` runs)."""

from .cli import main

if __name__ == "__main__":
    main()
