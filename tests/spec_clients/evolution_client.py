# The Python client of the API document ("Code Examples"), verbatim.
# tests/server/test_spec_clients.py runs it against a real server, changing only the
# URI and the token.
import asyncio
import websockets
import json

class EvolutionWebSocket:
    def __init__(self, token):
        self.token = token
        self.uri = 'wss://ws.t-developer.com/v1/evolution'
    
    async def connect(self):
        async with websockets.connect(self.uri) as websocket:
            # Authenticate
            await self.authenticate(websocket)
            
            # Subscribe to channels
            await self.subscribe(websocket, ['evolution', 'metrics'])
            
            # Listen for messages
            async for message in websocket:
                await self.handle_message(json.loads(message))
    
    async def authenticate(self, websocket):
        await websocket.send(json.dumps({
            'type': 'auth',
            'token': self.token
        }))
    
    async def subscribe(self, websocket, channels):
        await websocket.send(json.dumps({
            'type': 'subscribe',
            'channels': channels
        }))
    
    async def handle_message(self, message):
        if message['type'] == 'evolution_update':
            await self.on_evolution_update(message['data'])
        elif message['type'] == 'alert':
            await self.on_alert(message['data'])
    
    async def on_evolution_update(self, data):
        print(f"Generation {data['generation']}: "
              f"Fitness {data['average_fitness']:.3f}")
    
    async def on_alert(self, data):
        print(f"Alert: {data['title']} - {data['message']}")

# Usage
async def main():
    client = EvolutionWebSocket('your-jwt-token')
    await client.connect()

asyncio.run(main())
