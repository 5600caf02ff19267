"""``python deploy`` runs the application (what ``monai-deploy package`` calls)."""

import logging

from app import HemwslICHApp

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    HemwslICHApp().run()
